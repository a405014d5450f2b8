"""A loopback proxy in front of an API (the emulator) that answers some polls with deeply nested JSON.

A poll answer nested deeper than Python's recursion limit makes ``json.loads`` raise
``RecursionError``: not a WaveSpeed error, the kind of exception that used to crash a trigger.
Everything else is forwarded unchanged, so the prediction behind it lives on in the emulator.
Imported by tests as ``nesting_proxy`` (the deployment tier's scenarios too).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError
from urllib.request import Request, urlopen

# Far deeper than any recursion limit: decoding it raises RecursionError.
DEPTH = 100_000
NESTED = ("[" * DEPTH + "]" * DEPTH).encode()


class NestingProxy:
    """Forwards every request to ``upstream``; after the first ``skip`` result polls (``GET
    .../predictions/<id>/result``), the next ``nested_polls`` get :data:`NESTED` instead, with HTTP 200."""

    def __init__(self, upstream: str, nested_polls: int = 1, *, skip: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.skip_left = skip
        self.nested_left = nested_polls
        self.nested_sent = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "GET" and self.path.endswith("/result") and proxy._take_nested():
                    self._answer(200, "application/json", NESTED)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                request = Request(proxy.upstream + self.path, data=body, headers=headers, method=self.command)
                try:
                    with urlopen(request, timeout=60) as response:
                        self._answer(response.status, response.headers.get("Content-Type", ""), response.read())
                except HTTPError as exc:
                    self._answer(exc.code, exc.headers.get("Content-Type", ""), exc.read())

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                if content_type:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = do_PUT = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _take_nested(self) -> bool:
        with self.lock:
            if self.skip_left > 0:
                self.skip_left -= 1
                return False
            if self.nested_left <= 0:
                return False
            self.nested_left -= 1
            self.nested_sent += 1
            return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> NestingProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
