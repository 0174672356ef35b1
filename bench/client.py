"""A minimal client of the app's JSON API over http.client (stdlib only, loopback only).

One connection per request: gunicorn's sync workers close the connection after each response,
and a fresh connection per request is what independent clients do anyway.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import mimetypes
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ApiError(RuntimeError):
    """The app answered with an unexpected status (the message has the body's start)."""


@dataclass
class Response:
    status: int
    body: bytes
    elapsed_ms: float

    def json(self) -> dict:
        return json.loads(self.body)


def parse_time(value: str | None) -> float | None:
    """An ISO 8601 timestamp from the API (e.g. "2025-01-01T10:00:00.123456Z") as epoch seconds."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value).timestamp()


def multipart(
    fields: dict[str, str], file_field: str, filename: str, data: bytes
) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = f"----cxrbench{secrets.token_hex(12)}"
    ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode()
    )
    parts.append(data)
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class ApiClient:
    """Token-authenticated calls to one app instance on 127.0.0.1."""

    def __init__(self, host: str, port: int, token: str, timeout_s: float = 60.0) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"The benchmark only talks to loopback, not {host!r}.")
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.headers = {"Authorization": f"Token {token}", "Accept": "application/json"}

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Response:
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        return Response(resp.status, data, (time.perf_counter() - started) * 1000.0)

    def path_of(self, url: str) -> str:
        """The path of an absolute URL the API returned, checked to point back at this app."""
        parts = urlsplit(url)
        if parts.hostname not in LOOPBACK or (parts.port or 80) != self.port:
            raise ApiError(f"The API returned a URL on another host: {url}")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def upload(self, image: Path, data: bytes, patient_id: str) -> tuple[Response, int | None]:
        """POST /api/v1/studies/; returns the response and the new prediction's id (or None)."""
        body, ctype = multipart({"patient_id": patient_id, "view": "PA"}, "image", image.name, data)
        resp = self.request("POST", "/api/v1/studies/", body, ctype)
        if resp.status != 201:
            return resp, None
        return resp, int(resp.json()["prediction_id"])

    def prediction(self, prediction_id: int) -> dict:
        resp = self.request("GET", f"/api/v1/predictions/{prediction_id}/")
        if resp.status != 200:
            raise ApiError(f"GET prediction {prediction_id}: {resp.status} {resp.body[:200]!r}")
        return resp.json()

    def overlay(self, url: str) -> Response:
        resp = self.request("GET", self.path_of(url))
        if resp.status != 200 or not resp.body.startswith(PNG_SIGNATURE):
            raise ApiError(f"GET {url}: {resp.status}, {len(resp.body)} bytes, not a PNG")
        return resp

    def wait_until_up(self, timeout_s: float, check: Callable[[], None] | None = None) -> None:
        """Until the app answers an API request (any HTTP status below 500). `check` is called
        between tries: it raises when the server (or anything else it watches) has died."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if check:
                check()
            try:
                if self.request("GET", "/api/v1/predictions/0/").status < 500:
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"The web server did not answer within {timeout_s:.0f} s ({last}).")
