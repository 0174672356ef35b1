"""A real HTTP receiver for the webhook tests: a threaded http.server on a free local port that
answers with a scripted list of statuses and keeps every request it got."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """`statuses`: what the next requests are answered (the last one repeats); `delay_s`: how
    long to wait before answering (to make the sender time out)."""

    url: str = ""
    statuses: list[int] = field(default_factory=lambda: [200])
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)

    def next_status(self) -> int:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


def serve(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            receiver.requests.append(
                Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            status = receiver.next_status()
            try:
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(f"answer {status}".encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender timed out and went away

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/cxr"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def signature_is_valid(received: Received, secret: str, *, max_age_s: float = 300) -> bool:
    """What a receiver does (docs/operations.md): HMAC of "timestamp.body", compared in constant
    time, and a timestamp no older than max_age_s."""
    timestamp = received.headers["x-cxr-timestamp"]
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= max_age_s
    return fresh and hmac.compare_digest(received.headers["x-cxr-signature"], f"sha256={expected}")
