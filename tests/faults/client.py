"""The JSON API's client for the fault tests (stdlib only, loopback only, bounded timeouts)."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class Api:
    def __init__(self, base: str, token: str):
        assert base.startswith("http://127.0.0.1:"), base
        self.base, self.token = base, token
        # No proxies, whatever the environment says: traffic stays on 127.0.0.1.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        url = path if path.startswith("http") else self.base + path
        assert url.startswith(self.base), url
        req = urllib.request.Request(
            url,
            data=body,
            method=method,
            headers={"Authorization": f"Token {self.token}", **(headers or {})},
        )
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers), exc.read())

    def upload(
        self, data: bytes, *, filename: str, patient_id: str, timeout: float = 60
    ) -> Response:
        boundary = uuid.uuid4().hex
        buf = io.BytesIO()
        for name, value in (("patient_id", patient_id), ("view", "PA")):
            buf.write(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        buf.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
        )
        buf.write(data)
        buf.write(f"\r\n--{boundary}--\r\n".encode())
        return self.request(
            "POST",
            "/api/v1/studies/",
            body=buf.getvalue(),
            timeout=timeout,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )

    def prediction(self, prediction_id: int) -> dict:
        resp = self.request("GET", f"/api/v1/predictions/{prediction_id}/")
        assert resp.status == 200, (resp.status, resp.body[:500])
        return resp.json()


def png(seed: int, size: int = 128) -> bytes:
    """A small synthetic chest X-ray, distinct bytes per seed (so no de-duplication)."""
    from tests import imagegen

    return imagegen.png_bytes(imagegen.make_xray(size, size, seed=seed))
