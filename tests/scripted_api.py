"""A loopback API server answering polls with scripted prediction objects, for what the emulator
cannot produce on demand: statuses a newer API may add. Imported by tests as ``scripted_api``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedAPI:
    """A loopback server answering polls with scripted prediction objects (the last one repeats)."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.polls = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = api.answers[min(api.polls, len(api.answers) - 1)]
                api.polls += 1
                body = json.dumps({"code": 200, "message": "success", "data": data}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
