"""A real webhook receiver on loopback for the tests: it checks each POST's signature
over the raw body and answers with the statuses it is given, in order."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool


def signature_valid(*, secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute the HMAC over the raw body, compare in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


class Receiver:
    """Answers the n-th POST with statuses[n] (the last one repeats), after `delay` seconds.

    Set `secret` to the tenant's secret before anything is sent, so each request's
    signature is checked as it arrives.
    """

    def __init__(self, *statuses: int, delay: float = 0.0):
        self.statuses = list(statuses) or [200]
        self.delay = delay
        self.secret = ""
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/sync"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        valid = signature_valid(
            secret=self.secret, body=body, header=headers.get("X-Webhook-Signature", "")
        )
        with self._lock:
            self.requests.append(Received(path, headers, body, valid))
            index = min(len(self.requests), len(self.statuses)) - 1
            return self.statuses[index]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver._record(self.path, dict(self.headers.items()), body)
                time.sleep(receiver.delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok" if status < 300 else b"no")
                except OSError:  # the sender gave up waiting (the timeout tests)
                    pass

            def log_message(self, format, *args) -> None:  # quiet test output
                pass

        return Handler
