"""Refuse an over-sized request before Django spools its body to disk.

FILE_UPLOAD_MAX_MEMORY_SIZE does not cap an upload's size: without this, a multi-gigabyte
request is written to a temporary file in full before the upload service can reject it.
The service still checks the real size (a client may lie or omit Content-Length).
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse

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
            if request.path.startswith("/api/"):
                return JsonResponse({"error": message, "code": "too_large"}, status=413)
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
