"""What goes over the wire in one real DAG run: upload, submit, a deferred wait, outputs stored.

The run's every request is recorded by two loopback relays in front of the emulator: a forward
proxy named by ``HTTP_PROXY``/``HTTPS_PROXY`` (what the provider's clients send to the API), and
a files host (where the API's answers put the outputs and the pre-signed upload URL, as the real
API's storage lives on hosts other than its own). The key comes from ``WAVESPEED_API_KEY`` alone
(no connection), and ``~/.netrc`` holds credentials for every host of the run.
"""

from __future__ import annotations

import base64
import http.client
import sys
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import dag_test, dag_xcoms, ti_states

from airflow_provider_wavespeed.api.defaults import CLIENT_HEADERS
from airflow_provider_wavespeed.hooks.wavespeed import credentials_from_connection
from airflow_provider_wavespeed.operators.upload import WaveSpeedUploadOperator
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.sensors.wavespeed import WaveSpeedTaskSensor
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

pytestmark = pytest.mark.usefixtures("airflow_db")

WAN_I2V = "wavespeed-ai/wan-2.1/i2v-480p"
IMAGE = Path(__file__).resolve().parents[2] / "example_dags" / "wavespeed_example_input.png"
NETRC_AUTH = "Basic " + base64.b64encode(b"netrc-user:netrc-password").decode()
# Hop-by-hop headers, and the framing a relay sets itself.
_NOT_FORWARDED = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True)
class Seen:
    """One request a relay received."""

    method: str
    target: str  # as sent: an absolute URL to a forward proxy, a path to the files host
    headers: dict[str, str]  # lower-cased names

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


class Relay:
    """A loopback HTTP relay that records each request, then forwards it.

    As a forward proxy (``files`` given) it forwards each absolute-URL request to the host that URL
    names. Those for the API reach the emulator with the files host's name as their ``Host``: the
    emulator names its output and pre-signed upload URLs after the host it was reached at, so they
    point at the files host. As the files host (no ``files``), it forwards everything to the emulator.
    """

    def __init__(self, emulator_url: str, files: Relay | None = None) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        emulator = urlsplit(emulator_url).netloc
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                headers = {name.lower(): value for name, value in self.headers.items()}
                with relay.lock:
                    relay.seen.append(Seen(self.command, self.path, headers))
                body = self._body()
                parts = urlsplit(self.path)
                target, host = emulator, headers.get("host", emulator)
                if files is not None:  # a forward proxy: the request names its host
                    target = host = parts.netloc
                    if target == emulator:
                        host = files.netloc
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                sent = {name: value for name, value in self.headers.items() if name.lower() not in _NOT_FORWARDED}
                connection = http.client.HTTPConnection(target, timeout=60)
                try:
                    connection.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                    connection.putheader("Host", host)
                    for name, value in sent.items():
                        connection.putheader(name, value)
                    connection.putheader("Content-Length", str(len(body)))
                    connection.endheaders(body)
                    answer = connection.getresponse()
                    data = answer.read()
                    self.send_response(answer.status)
                    for name, value in answer.getheaders():
                        if name.lower() not in _NOT_FORWARDED:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.netloc = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.netloc}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)


def _api_without_a_connection(emulator: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a connection the key comes from WAVESPEED_API_KEY and the base URL is WaveSpeed's own:
    point that default at the emulator (the only change; everything else is the shipped code)."""
    monkeypatch.delenv("AIRFLOW_CONN_WAVESPEED_DEFAULT", raising=False)
    monkeypatch.setenv("WAVESPEED_API_KEY", emulator.api_key)
    monkeypatch.setattr(sys.modules[credentials_from_connection.__module__], "DEFAULT_BASE_URL", emulator.url)


def _netrc_for_every_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(
        "machine 127.0.0.1 login netrc-user password netrc-password\n"
        "machine localhost login netrc-user password netrc-password\n"
        "default login netrc-user password netrc-password\n"
    )
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)


def _proxy_for_everything(proxy: Relay, monkeypatch: pytest.MonkeyPatch) -> None:
    # No NO_PROXY at all: loopback is not bypassed unless NO_PROXY says so (urllib and requests alike).
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, proxy.url)


@pytest.fixture
def relays(wavespeed_emulator: WaveSpeedEmulator) -> Any:
    files = Relay(wavespeed_emulator.url)
    proxy = Relay(wavespeed_emulator.url, files=files)
    yield proxy, files
    proxy.close()
    files.close()


def test_one_run_s_requests_carry_the_key_to_the_api_only_through_the_proxy_with_the_client_headers(
    wavespeed_emulator: WaveSpeedEmulator,
    relays: tuple[Relay, Relay],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    proxy, files = relays
    key = f"sk-wire-{uuid.uuid4().hex}"
    wavespeed_emulator.set_api_key(key)
    _api_without_a_connection(wavespeed_emulator, monkeypatch)
    _netrc_for_every_host(tmp_path, monkeypatch)
    _proxy_for_everything(proxy, monkeypatch)
    wavespeed_emulator.hold(polls=1)  # running at the sensor's first poll (so it defers), done at the next
    out = tmp_path / "out"

    with DAG(
        "wavespeed_wire",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        default_args={"retries": 0},
    ) as dag:
        upload = WaveSpeedUploadOperator(task_id="upload", path=str(IMAGE))
        submit = WaveSpeedSubmitOperator(
            task_id="submit",
            model=WAN_I2V,
            inputs={"prompt": "drift", "image": upload.output, "duration": 5},
            wait_for_completion=False,
        )
        WaveSpeedTaskSensor(
            task_id="wait",
            prediction_id=submit.output,  # the submit returns the prediction's id when it does not wait
            deferrable=True,
            poll_interval=0.2,
            output_path=str(out),
        )
    dag_run = dag_test(dag)
    assert dag_run.state == "success", ti_states(dag_run)

    # The run did the real thing: one upload, one submit whose image is the upload, one stored video.
    [submission] = wavespeed_emulator.submissions()
    upload_url = dag_xcoms(dag_run)[("upload", -1, "return_value")]
    assert submission["inputs"]["image"] == upload_url and upload_url.startswith(f"{files.url}/_emulator/uploads/")
    stored = dag_xcoms(dag_run)[("wait", -1, "return_value")]["stored_paths"]
    assert stored == [str(out / f"{submission['id']}_0.mp4")] and Path(stored[0]).stat().st_size > 0

    via_proxy = proxy.requests()
    api = [seen for seen in via_proxy if seen.target.startswith(f"{wavespeed_emulator.url}/")]
    on_files = files.requests()
    counters = wavespeed_emulator.counters()
    # HTTP_PROXY carried every API request (the emulator answered none the relays did not forward) and
    # the upload's PUT; only the output's download went straight to its host (no proxy may connect
    # for it, out of the address check's sight).
    assert counters["total_requests"] == len(api) + len(on_files)
    assert all(seen.path.startswith("/api/v3/") for seen in api)
    assert [seen.method for seen in api].count("POST") == 2  # the upload ticket and the submit
    assert sum(seen.path.endswith("/result") for seen in api) >= 2  # the sensor deferred, then its trigger polled
    assert [(seen.method, seen.target) for seen in via_proxy if seen not in api] == [
        ("PUT", files.url + seen.target) for seen in on_files if seen.method == "PUT"
    ]
    # Every API request names the provider, and carries the key from WAVESPEED_API_KEY as a Bearer token.
    for seen in api:
        assert {name: seen.headers.get(name.lower()) for name in CLIENT_HEADERS} == CLIENT_HEADERS, seen
        assert seen.headers.get("authorization") == f"Bearer {key}", seen
    # The files host got the upload's PUT and the output's download, and neither the key nor a netrc
    # credential: no Authorization header at all, and the key in no header of any kind.
    assert sorted(seen.method for seen in on_files) == ["GET", "PUT"]
    [put] = [seen for seen in on_files if seen.method == "PUT"]
    [download] = [seen for seen in on_files if seen.method == "GET"]
    assert put.path.startswith("/_emulator/uploads/") and download.path == f"/_emulator/files/{submission['id']}_0.mp4"
    for seen in on_files + [seen for seen in via_proxy if seen not in api]:
        assert "authorization" not in seen.headers and "proxy-authorization" not in seen.headers, seen
        assert key not in repr(seen), seen
    assert counters["upload_put_with_authorization"] == 0
    assert not any(NETRC_AUTH in repr(seen.headers) for seen in via_proxy + on_files)


def test_no_proxy_sends_a_run_s_requests_around_the_proxy(
    wavespeed_connection: WaveSpeedEmulator, relays: tuple[Relay, Relay], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, _ = relays
    _proxy_for_everything(proxy, monkeypatch)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    wavespeed_connection.hold(polls=1)  # running at the first poll: the wait defers to its trigger
    with DAG(
        "wavespeed_wire_no_proxy",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        default_args={"retries": 0},
    ) as dag:
        WaveSpeedSubmitOperator(
            task_id="submit",
            model=WAN_I2V,
            inputs={"prompt": "drift", "image": "https://example.com/a.png"},
            wait_for_completion=True,
            poll_interval=0.2,
        )
    dag_run = dag_test(dag)
    assert dag_run.state == "success", ti_states(dag_run)
    counters = wavespeed_connection.counters()
    assert counters["requests"]["submit"] == 1 and counters["requests"]["result"] >= 2
    assert proxy.requests() == []  # every request went straight to the API, named in NO_PROXY


def test_a_failed_upload_s_error_names_no_signed_query(
    wavespeed_connection: WaveSpeedEmulator,
    relays: tuple[Relay, Relay],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, _ = relays
    _proxy_for_everything(proxy, monkeypatch)  # the proxy sees the signed URL the task logs must not show
    wavespeed_connection.add_fault("upload_put", "http_error", status=403, times=None)
    with DAG(
        "wavespeed_wire_failed_upload",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        default_args={"retries": 0},
    ) as dag:
        WaveSpeedUploadOperator(task_id="upload", path=str(IMAGE))
    capfd.readouterr()
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("upload", -1): "failed"}
    puts = [seen for seen in proxy.requests() if seen.method == "PUT"]
    assert puts, "the upload never reached its PUT"
    signatures = {parse_qs(urlsplit(seen.target).query)["signature"][0] for seen in puts}
    captured = capfd.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert "PUT to 127.0.0.1" in logs and "403" in logs  # the failure is told, with its host and status...
    assert not any(signature in logs for signature in signatures)  # ...and without the URL's signed query
    assert "signature=" not in logs
