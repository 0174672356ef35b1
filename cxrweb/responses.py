"""Responses shared by both apps' views."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db.models.fields.files import FieldFile
from django.http import (
    FileResponse,
    Http404,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.utils.http import content_disposition_header
from django.views import defaults

logger = logging.getLogger(__name__)

# Characters a spreadsheet reads as the start of a formula (OWASP "CSV Injection"), with their
# full-width forms, which some spreadsheets fold to the ASCII ones.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_NOT_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


class StoredFileUnreadable(Exception):
    """A stored file exists on record but the media storage cannot be read (a folder replaced,
    unmounted or unreadable, an I/O error): the server's fault, not a missing file, so a 503."""

    code = "storage_unavailable"

    def __init__(self, error: OSError) -> None:
        reason = error.strerror or type(error).__name__
        super().__init__(
            f"The server cannot read the stored file right now ({reason}). Please try again "
            "later, and tell your administrator if it keeps happening."
        )


def open_stored_file(f: FieldFile) -> object:
    """``f`` opened for reading. Raises Http404 when it is missing (no file on record, or none
    on disk), :class:`StoredFileUnreadable` when the storage itself fails."""
    try:
        return f.open("rb")
    except (FileNotFoundError, ValueError) as exc:
        raise Http404("The file is missing from storage.") from exc
    except OSError as exc:
        logger.error("cannot read stored file %s: %s", f.name, exc)
        raise StoredFileUnreadable(exc) from exc


def storage_unavailable(request, exception: StoredFileUnreadable) -> HttpResponseBase:
    """A 503 for a file the storage cannot read: JSON on the API, a plain message elsewhere."""
    if request.path.startswith("/api/"):
        response: HttpResponseBase = JsonResponse(
            {"error": str(exception), "code": exception.code}, status=503
        )
    else:
        response = HttpResponse(
            str(exception), status=503, content_type="text/plain; charset=utf-8"
        )
    response["Retry-After"] = "60"
    return response


def private_file_response(
    f: FieldFile, content_type: str, *, download_name: str | None = None
) -> FileResponse:
    """A stored file (never public media) to a user the calling view has already authorized.

    A missing file is a 404; storage that cannot be read raises :class:`StoredFileUnreadable`
    (a 503, by :class:`cxrweb.middleware.StorageUnavailableMiddleware` or the API's handler)."""
    handle = open_stored_file(f)
    response = FileResponse(
        handle,
        content_type=content_type,
        as_attachment=bool(download_name),
        filename=download_name or "",
    )
    response["Cache-Control"] = "no-store"  # a patient's image: kept in no cache
    return response


def download_name(stem: object, suffix: str = "", *, fallback: str = "download") -> str:
    """A download's file name made from stored data (an accession number, a version's name):
    each run of characters outside ``A-Z a-z 0-9 . _ -`` becomes one ``-``, so quotes, ``;``,
    slashes and line breaks in the data reach neither the header nor the user's disk."""
    return (_NOT_IN_FILE_NAMES.sub("-", str(stem)).strip("-.") or fallback) + suffix


def set_attachment(response: HttpResponseBase, filename: str) -> None:
    """``Content-Disposition: attachment`` built by RFC 6266's rules (quoted, or ``filename*``)."""
    response["Content-Disposition"] = content_disposition_header(True, filename)


def csv_cell(value: object) -> str:
    """A cell that a spreadsheet shows as text: one starting like a formula gets a ``'``."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def csv_response(
    filename: str, header: list[str], rows: Iterable[Iterable[object]]
) -> StreamingHttpResponse:
    """Every CSV the app writes: streamed, each cell through ``csv_cell``, as an attachment."""
    writer = csv.writer(_Echo())

    def lines() -> Iterable[str]:
        yield writer.writerow([csv_cell(v) for v in header])
        for row in rows:
            yield writer.writerow([csv_cell(v) for v in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    set_attachment(response, filename)
    return response


def bad_request_body(exception: Exception | None) -> dict[str, str]:
    """``{"error", "code"}`` for a request Django refused to read (too many fields or files)."""
    if isinstance(exception, TooManyFilesSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        return {
            "error": f"The request carries more than {limit} files; nothing was stored. "
            f"Send at most {limit} at a time.",
            "code": "too_many_files",
        }
    if isinstance(exception, TooManyFieldsSent):
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        return {
            "error": f"The request has more than {limit} form fields; nothing was stored. "
            "Send one image with its own fields per request.",
            "code": "too_many_fields",
        }
    if isinstance(exception, RequestDataTooBig):
        return {
            "error": "The request's form fields are too large; nothing was stored.",
            "code": "too_large",
        }
    return {"error": "The request could not be read; nothing was stored.", "code": "bad_request"}


def bad_request(request, exception: Exception | None = None) -> HttpResponseBase:
    """handler400: JSON on the API, a page in the app's layout elsewhere (never a traceback)."""
    body = bad_request_body(exception)
    if request.path.startswith("/api/"):
        return JsonResponse(body, status=400)
    return render(request, "400.html", {"message": body["error"]}, status=400)


def permission_denied(request, exception: Exception | None = None) -> HttpResponseBase:
    """handler403: JSON on the API, elsewhere a page in the app's layout that says why, tells the
    user to ask an administrator for a role, and offers to sign out (as another user, say)."""
    message = str(exception or "") or "You do not have permission to open this page."
    if request.path.startswith("/api/"):
        return JsonResponse({"error": message, "code": "permission_denied"}, status=403)
    from cxrweb.roles import is_clinical_user

    return render(
        request,
        "403.html",
        {"message": message, "clinical": is_clinical_user(request.user)},
        status=403,
    )


def not_found(request, exception: Exception | None = None) -> HttpResponseBase:
    """handler404: JSON on the API (an unknown path there too), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"error": "Not found: there is no such API endpoint or object.", "code": "not_found"},
            status=404,
        )
    return defaults.page_not_found(request, exception)
