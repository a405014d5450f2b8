"""Every request names this provider the way WaveSpeed's own SDK names itself (X-Client-Name/-Version)."""

from __future__ import annotations

import http.server
import inspect
import json
import threading
from collections.abc import Iterator

import pytest
import wavespeed.api.client as sdk_client

from airflow_provider_wavespeed import __version__
from airflow_provider_wavespeed.api import AsyncWaveSpeedClient, WaveSpeedClient


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers.items()))
        body = json.dumps({"code": 200, "message": "success", "data": {"balance": 12.5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_header_names_are_the_official_sdks() -> None:
    # The SDK's own request headers, read from its source: the names this provider must use.
    source = inspect.getsource(sdk_client)
    assert '"X-Client-Name"' in source and '"X-Client-Version"' in source


def test_sync_and_async_clients_send_the_client_name_and_version(recorder: str) -> None:
    import asyncio

    assert WaveSpeedClient("secret-key-123", recorder).get_balance() == 12.5

    async def read_balance() -> float:
        async with AsyncWaveSpeedClient("secret-key-123", recorder) as client:
            return await client.get_balance()

    assert asyncio.run(read_balance()) == 12.5
    assert len(_Recorder.seen) == 2
    for headers in _Recorder.seen:
        lowered = {name.lower(): value for name, value in headers.items()}
        assert lowered["x-client-name"] == "airflow-provider-wavespeed"
        assert lowered["x-client-version"] == __version__
        assert lowered["authorization"] == "Bearer secret-key-123"
