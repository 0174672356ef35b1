"""Posting uploads through the API and the browser form, and what an upload left behind."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from diagnosis.models import Image, Patient, Study

UPLOAD_URL = "/studies/upload/"
API_URL = "/api/v1/studies/"


def api_client(api_token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token}")
    return client


def post_api(api: APIClient, data: bytes, name: str = "chest.png", **fields):
    return api.post(
        API_URL, {"image": SimpleUploadedFile(name, data), **fields}, format="multipart"
    )


def post_form(client, data: bytes, name: str = "chest.png", **fields):
    return client.post(UPLOAD_URL, {"image": SimpleUploadedFile(name, data), **fields})


def stored() -> dict:
    """Rows and files an upload leaves: compared before and after a refused one."""
    media = Path(settings.MEDIA_ROOT)
    files = sorted(str(p) for p in media.rglob("*") if p.is_file()) if media.exists() else []
    return {
        "patients": Patient.objects.count(),
        "studies": Study.objects.count(),
        "images": Image.objects.count(),
        "files": files,
    }
