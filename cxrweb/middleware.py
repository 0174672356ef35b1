"""Refuse an over-sized request before Django spools its body to disk.

FILE_UPLOAD_MAX_MEMORY_SIZE does not cap an upload's size: without this, a multi-gigabyte
request is written to a temporary file in full before the upload service can reject it.
The service still checks the real size (a client may lie or omit Content-Length).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.db import DatabaseError, InterfaceError
from django.http import HttpResponse, JsonResponse

from cxrweb.responses import StoredFileUnreadable, storage_unavailable

logger = logging.getLogger("cxrweb")

# Paths whose clients read JSON errors: the API and DICOMweb (STOW-RS).
JSON_PATHS = ("/api/", "/dicomweb/")
# Room for the multipart envelope and the form fields around the file.
ENVELOPE_BYTES = 1024 * 1024


class UploadSizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = settings.CXR_MAX_UPLOAD_BYTES
        if length > limit + ENVELOPE_BYTES:
            message = (
                f"The upload is {length / 2**20:.1f} MB; the limit is {limit / 2**20:.1f} MB. "
                "Nothing was stored."
            )
            if request.path.startswith(JSON_PATHS):
                return JsonResponse({"error": message, "code": "too_large"}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class DatabaseUnavailableMiddleware:
    """A view that cannot reach the database answers 503 with a clear message, not a 500 page.

    Nothing is half-stored: the upload service removes the files it wrote when its transaction
    fails, and no row outlives a rolled-back transaction.
    """

    MESSAGE = "The database is unavailable; nothing was stored. Please try again in a moment."

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, DatabaseError | InterfaceError):
            return None
        logger.error("database unavailable: %s", exception)
        if request.path.startswith(JSON_PATHS):
            response = JsonResponse(
                {"error": self.MESSAGE, "code": "database_unavailable"}, status=503
            )
        else:
            response = HttpResponse(
                self.MESSAGE, status=503, content_type="text/plain; charset=utf-8"
            )
        response["Retry-After"] = "30"
        return response


class StorageUnavailableMiddleware:
    """A view whose stored file the media storage cannot read answers 503 (JSON on the API, a
    plain message elsewhere), not a 500 page: see :func:`cxrweb.responses.open_stored_file`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, StoredFileUnreadable):
            return None
        return storage_unavailable(request, exception)


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's session middleware, except that a failure to save the session (the database is
    down) keeps the response it was given instead of replacing it with a 500."""

    def process_response(self, request, response):
        try:
            return super().process_response(request, response)
        except DatabaseError:
            logger.error("could not save the session: database unavailable")
            return response


class SecurityHeadersMiddleware:
    """A Content-Security-Policy on every response, and `Cache-Control: no-store` on every one
    that does not set its own: pages, files and API answers carry patient data, which must not
    stay in a browser's or a proxy's cache. Static files are served (and cached) by WhiteNoise
    before this runs. Referrer-Policy is Django's (SECURE_REFERRER_POLICY)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", settings.CXR_CONTENT_SECURITY_POLICY)
        if "Cache-Control" not in response:
            response["Cache-Control"] = "no-store"
        return response
