"""Responses shared by both apps' views."""

from __future__ import annotations

from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404


def private_file_response(f: FieldFile, content_type: str, *,
                          download_name: str | None = None) -> FileResponse:
    """A stored file (never public media) to a user the calling view has already authorized."""
    try:
        handle = f.open("rb")
    except (FileNotFoundError, ValueError) as exc:
        raise Http404("The file is missing from storage.") from exc
    response = FileResponse(handle, content_type=content_type, as_attachment=bool(download_name),
                            filename=download_name or "")
    response["Cache-Control"] = "private, max-age=3600"
    return response
