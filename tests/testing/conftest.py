"""Fixtures shared by the emulator's own tests: one emulator per module, reset for each test."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_wavespeed.testing import WaveSpeedEmulator


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[WaveSpeedEmulator]:
    """Run the module's emulator; predictions take the module's ``EMULATOR_DURATION`` seconds (default 0).

    It also knows the module's ``EMULATOR_MODELS`` ({model id: kind}): the tests' own ids beyond
    the catalog, registered explicitly (any other unknown id gets 404, as from the API).
    """
    duration = getattr(request.module, "EMULATOR_DURATION", 0.0)
    with WaveSpeedEmulator(duration=duration, models=getattr(request.module, "EMULATOR_MODELS", None)) as emulator:
        yield emulator


@pytest.fixture
def emulator(server: WaveSpeedEmulator) -> WaveSpeedEmulator:
    """Return the module's emulator, reset: no predictions, faults, holds or counters."""
    server.reset()
    return server


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]]:
    """(URL, deliveries) of a local endpoint answering 204 to every POST; a delivery is (headers, body)."""
    received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put(({key.lower(): value for key, value in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hooks/wavespeed?source=test", received
    httpd.shutdown()
    httpd.server_close()
