"""store_outputs: outputs copied to local or object storage, streamed, atomic, retried, deterministic."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
from feature_helpers import LocalHTTPServer, needs_object_storage

from airflow_provider_wavespeed.api.errors import (
    WaveSpeedConfigError,
    WaveSpeedNotFoundError,
    WaveSpeedServerError,
    WaveSpeedTransportError,
)
from airflow_provider_wavespeed.api.models import Prediction
from airflow_provider_wavespeed.api.retry import RetryPolicy
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.storage import DownloadPolicy, WaveSpeedStorageError, store_outputs
from airflow_provider_wavespeed.storage._files import output_extension
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
FAST_RETRY = RetryPolicy(max_retries=3, backoff_base=0.01, backoff_max=0.05)
# The outputs here come from loopback servers, as the emulator's do: allowed because the API is on loopback too.
LOCAL_API = DownloadPolicy(api_base_url="http://127.0.0.1:1")


def _generate(emulator: WaveSpeedEmulator, model: str = FLUX, **inputs: Any) -> Prediction:
    emulator.set_duration(0.0)
    return WaveSpeedHook().run(model, {"prompt": "a kite", **inputs}, poll_interval=0.05, timeout=10)


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_url_outputs_are_copied_under_deterministic_names(
    wavespeed_connection: WaveSpeedEmulator, tmp_path: Path
) -> None:
    prediction = _generate(wavespeed_connection, num_images=3, output_format="png")
    stored = store_outputs(prediction, tmp_path / "out", downloads=LOCAL_API)
    names = [f"{prediction.id}_{index}.png" for index in range(3)]
    assert stored == [str(tmp_path / "out" / name) for name in names]
    assert _files(tmp_path / "out") == names  # nothing else: no temporary files left
    for path, url in zip(stored, prediction.outputs, strict=True):
        assert isinstance(url, str)
        assert Path(path).read_bytes() == requests.get(url, timeout=5).content


@pytest.mark.parametrize(
    ("model", "inputs", "ext"),
    [(FLUX, {}, "jpeg"), (FLUX, {"output_format": "png"}, "png"), ("wavespeed-ai/wan-2.1/t2v-480p", {}, "mp4")],
)
def test_the_extension_follows_the_served_file(
    wavespeed_connection: WaveSpeedEmulator, tmp_path: Path, model: str, inputs: dict[str, Any], ext: str
) -> None:
    prediction = _generate(wavespeed_connection, model, **inputs)
    (stored,) = store_outputs(prediction, tmp_path, downloads=LOCAL_API)
    assert stored.endswith(f"{prediction.id}_0.{ext}")


def test_base64_outputs_are_decoded(wavespeed_connection: WaveSpeedEmulator, tmp_path: Path) -> None:
    prediction = _generate(wavespeed_connection, num_images=2, output_format="png", enable_base64_output=True)
    assert not str(prediction.outputs[0]).startswith("http")
    stored = store_outputs(prediction, tmp_path, downloads=LOCAL_API)
    assert [Path(p).name for p in stored] == [f"{prediction.id}_0.png", f"{prediction.id}_1.png"]
    for path, data in zip(stored, prediction.outputs, strict=True):
        assert isinstance(data, str)
        assert Path(path).read_bytes() == base64.b64decode(data)
    # A video returned as base64 gets its extension from its bytes.
    video = _generate(wavespeed_connection, "wavespeed-ai/wan-2.1/t2v-480p", enable_base64_output=True)
    assert store_outputs(video, tmp_path, downloads=LOCAL_API)[0].endswith(".mp4")


def test_a_rerun_overwrites_the_same_names(wavespeed_connection: WaveSpeedEmulator, tmp_path: Path) -> None:
    prediction = _generate(wavespeed_connection, num_images=2)
    first = store_outputs(prediction, tmp_path, downloads=LOCAL_API)
    original = Path(first[0]).read_bytes()
    Path(first[0]).write_bytes(b"stale")
    assert store_outputs(prediction, tmp_path, downloads=LOCAL_API) == first
    assert Path(first[0]).read_bytes() == original
    assert len(_files(tmp_path)) == 2


def test_output_path_forms_name_the_same_directory(wavespeed_connection: WaveSpeedEmulator, tmp_path: Path) -> None:
    prediction = _generate(wavespeed_connection)
    expected = [str(tmp_path / f"{prediction.id}_0.jpeg")]
    assert store_outputs(prediction, str(tmp_path), downloads=LOCAL_API) == expected
    assert store_outputs(prediction, f"file://{tmp_path}/", downloads=LOCAL_API) == expected
    assert store_outputs(prediction, tmp_path, downloads=LOCAL_API) == expected


@needs_object_storage
def test_a_local_object_storage_path_is_a_local_directory(
    wavespeed_connection: WaveSpeedEmulator, tmp_path: Path
) -> None:
    from airflow.sdk import ObjectStoragePath

    prediction = _generate(wavespeed_connection)
    expected = [str(tmp_path / f"{prediction.id}_0.jpeg")]
    assert store_outputs(prediction, ObjectStoragePath(f"file://{tmp_path}"), downloads=LOCAL_API) == expected


def test_transient_download_errors_are_retried(wavespeed_connection: WaveSpeedEmulator, tmp_path: Path) -> None:
    prediction = _generate(wavespeed_connection)
    wavespeed_connection.add_fault("files", "http_error", status=503, times=2)
    wavespeed_connection.add_fault("files", "drop", times=1)
    (stored,) = store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=LOCAL_API)
    assert Path(stored).read_bytes() == requests.get(str(prediction.outputs[0]), timeout=5).content
    assert wavespeed_connection.counters()["requests"]["files"] == 4 + 1  # 3 failures, the copy, our check


def test_downloads_give_up_after_the_retry_policy(wavespeed_connection: WaveSpeedEmulator, tmp_path: Path) -> None:
    prediction = _generate(wavespeed_connection)
    wavespeed_connection.add_fault("files", "http_error", status=502, times=None)
    with pytest.raises(WaveSpeedServerError, match=rf"output 0 of prediction {prediction.id}.*HTTP 502") as info:
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=LOCAL_API)
    assert info.value.prediction_id == prediction.id and info.value.status_code == 502
    assert wavespeed_connection.counters()["requests"]["files"] == FAST_RETRY.max_retries + 1
    assert _files(tmp_path) == []


def test_a_missing_file_fails_at_once_and_leaves_nothing(
    wavespeed_connection: WaveSpeedEmulator, tmp_path: Path
) -> None:
    prediction = _generate(wavespeed_connection)
    wavespeed_connection.add_fault("files", "http_error", status=404)
    with pytest.raises(WaveSpeedNotFoundError, match="7 days") as info:
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=LOCAL_API)
    assert info.value.prediction_id == prediction.id and info.value.status_code == 404
    assert wavespeed_connection.counters()["requests"]["files"] == 1
    assert _files(tmp_path) == []


def _serve_truncated(handler: Any) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/png")
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    handler.wfile.write(b"\x89PNG" + b"x" * 1000)  # then the connection closes mid-body
    handler.wfile.flush()
    handler.close_connection = True


def test_an_interrupted_download_never_replaces_the_stored_file(local_http: LocalHTTPServer, tmp_path: Path) -> None:
    attempts: list[int] = []

    def truncated(handler: Any) -> None:
        attempts.append(1)
        _serve_truncated(handler)

    local_http.routes["/cut.png"] = truncated
    prediction = Prediction(id="p1", model="m/x", status="completed", outputs=[local_http.url("/cut.png")])
    previous = tmp_path / "p1_0.png"
    previous.write_bytes(b"the complete earlier copy")
    with pytest.raises(WaveSpeedTransportError, match="output 0 of prediction p1"):
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=LOCAL_API)
    assert len(attempts) == FAST_RETRY.max_retries + 1
    assert previous.read_bytes() == b"the complete earlier copy"
    assert _files(tmp_path) == ["p1_0.png"]  # no partial or temporary file


def test_downloads_are_streamed_in_chunks(
    local_http: LocalHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = os.urandom(3 * 1024 * 1024)

    def big(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    local_http.routes["/video"] = big
    writes: list[int] = []
    from airflow_provider_wavespeed.storage import _files

    real_open = _files._LocalDirectory.open_temp

    class Recording:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def write(self, data: bytes) -> int:
            writes.append(len(data))
            return int(self.handle.write(data))

        def __enter__(self) -> Recording:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

    monkeypatch.setattr(_files._LocalDirectory, "open_temp", lambda self, name: Recording(real_open(self, name)))
    prediction = Prediction(id="v1", model="m/t2v", status="completed", outputs=[local_http.url("/video")])
    (stored,) = store_outputs(prediction, tmp_path, chunk_size=64 * 1024, downloads=LOCAL_API)
    assert stored.endswith("v1_0.mp4")  # no extension in the URL: taken from the Content-Type
    assert Path(stored).read_bytes() == body
    assert max(writes) <= 64 * 1024 and len(writes) >= len(body) // (64 * 1024)


def _serve_a_webp_recording_headers(local_http: LocalHTTPServer, path: str) -> list[dict[str, str]]:
    """Serve a 4-byte webp at ``path``; the list gets the headers of each request for it."""
    seen: list[dict[str, str]] = []

    def record(handler: Any) -> None:
        seen.append(dict(handler.headers.items()))
        handler.send_response(200)
        handler.send_header("Content-Type", "image/webp")
        handler.send_header("Content-Length", "4")
        handler.end_headers()
        handler.wfile.write(b"RIFF")

    local_http.routes[path] = record
    return seen


def test_no_api_key_is_sent_to_the_file_host(
    wavespeed_connection: WaveSpeedEmulator, local_http: LocalHTTPServer, tmp_path: Path
) -> None:
    seen = _serve_a_webp_recording_headers(local_http, "/img")
    WaveSpeedHook().get_balance()  # the hook's client is set up with the key...
    prediction = Prediction(id="k1", model="m/x", status="completed", outputs=[local_http.url("/img")])
    assert store_outputs(prediction, tmp_path, downloads=LOCAL_API)[0].endswith("k1_0.webp")
    assert seen and not any(name.lower() == "authorization" for name in seen[0])  # ...downloads never see it
    assert wavespeed_connection.api_key not in repr(seen)


@pytest.mark.parametrize(
    "policy",
    [LOCAL_API, DownloadPolicy(api_base_url="http://127.0.0.1:1", allow_private_addresses=True)],
    ids=["local-api", "private-addresses-allowed"],
)
def test_no_netrc_credential_reaches_an_output_host(
    local_http: LocalHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: DownloadPolicy
) -> None:
    # A ~/.netrc "default" entry: requests would send it to any host a session that trusts the environment
    # fetches from (the private-address opt-out keeps the environment's proxies, so it trusts it).
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("default login netrc-user password netrc-password\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    seen = _serve_a_webp_recording_headers(local_http, "/img")
    prediction = Prediction(id="n1", model="m/x", status="completed", outputs=[local_http.url("/img")])
    assert store_outputs(prediction, tmp_path / "out", downloads=policy)[0].endswith("n1_0.webp")
    assert len(seen) == 1 and not any(name.lower() == "authorization" for name in seen[0])


def test_a_failed_download_names_no_signed_query(local_http: LocalHTTPServer, tmp_path: Path) -> None:
    path = "/cut.png?X-Amz-Credential=AKIA-SECRET&X-Amz-Signature=0123456789abcdef"
    local_http.routes[path] = _serve_truncated
    signed = local_http.url(path)
    prediction = Prediction(id="q1", model="m/x", status="completed", outputs=[signed])
    with pytest.raises(WaveSpeedTransportError) as caught:
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=LOCAL_API)
    assert "AKIA-SECRET" not in str(caught.value) and "0123456789abcdef" not in str(caught.value)
    local_http.close()  # nothing listens there now: the connection error's text must not carry it either
    with pytest.raises(WaveSpeedTransportError) as refused:
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=LOCAL_API)
    assert "AKIA-SECRET" not in str(refused.value) and "0123456789abcdef" not in str(refused.value)


@needs_object_storage
def test_object_storage_destinations(wavespeed_connection: WaveSpeedEmulator, memory_store: None) -> None:
    from airflow.sdk import ObjectStoragePath
    from fsspec.implementations.memory import MemoryFileSystem

    prediction = _generate(wavespeed_connection, num_images=2, output_format="png")
    stored = store_outputs(prediction, ObjectStoragePath("memory://bucket/generated/"), downloads=LOCAL_API)
    # Paths come back as Airflow renders them: universal-pathlib 0.2 (Airflow 3.0) writes memory
    # URLs with an empty host, "memory:///bucket/..."; 0.3 (Airflow 3.1+) writes "memory://bucket/...".
    root = (
        "memory://bucket/generated"
        if str(ObjectStoragePath("memory://b/c")) == "memory://b/c"
        else "memory:///bucket/generated"
    )
    assert stored == [f"{root}/{prediction.id}_{i}.png" for i in range(2)]
    for path, url in zip(stored, prediction.outputs, strict=True):
        assert ObjectStoragePath(path).read_bytes() == requests.get(str(url), timeout=5).content
    assert store_outputs(prediction, "memory://bucket/other", downloads=LOCAL_API) == [
        p.replace("generated", "other") for p in stored
    ]
    assert sorted(MemoryFileSystem().find("/bucket")) == sorted(
        f"/bucket/{folder}/{prediction.id}_{i}.png" for folder in ("generated", "other") for i in range(2)
    )  # only the final names: the temporary ones were moved


def test_unusable_destinations_raise_storage_errors(wavespeed_connection: WaveSpeedEmulator, tmp_path: Path) -> None:
    prediction = _generate(wavespeed_connection)
    # Airflow 3.1+ refuses the unknown scheme when the path is built, 3.0 only when writing to it,
    # naming the path as universal-pathlib 0.2 renders it ("nosuchfs:///bucket/out"): both name it.
    with pytest.raises(WaveSpeedStorageError, match=r"nosuchfs:///?bucket"):
        store_outputs(prediction, "nosuchfs://bucket/out/", downloads=LOCAL_API)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(WaveSpeedStorageError, match="a-file"):
        store_outputs(prediction, blocker, downloads=LOCAL_API)
    with pytest.raises(WaveSpeedStorageError, match="output_path"):
        store_outputs(prediction, "  ", downloads=LOCAL_API)


def test_outputs_that_are_not_urls_or_base64_are_refused(tmp_path: Path) -> None:
    prediction = Prediction(id="b1", model="m/x", status="completed", outputs=["not base64 at all!"])
    with pytest.raises(WaveSpeedStorageError, match="neither an http") as info:
        store_outputs(prediction, tmp_path, downloads=LOCAL_API)
    assert info.value.prediction_id == "b1"
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("content_type", "url", "ext"),
    [
        ("image/jpeg", "https://cdn/x/abc.jpeg", "jpeg"),
        ("image/jpeg", "https://cdn/x/abc.jpg?sig=1", "jpg"),
        ("image/png; charset=binary", "https://cdn/x/abc", "png"),
        ("application/octet-stream", "https://cdn/x/abc.webp", "webp"),
        ("video/mp4", "https://cdn/x/abc.bin", "mp4"),
        (None, "https://cdn/x/abc.MP4", "mp4"),
        (None, "https://cdn/x/abc", "bin"),
        ("audio/mpeg", "", "mp3"),
    ],
)
def test_extension_rules(content_type: str | None, url: str, ext: str) -> None:
    assert output_extension(content_type, url) == ext


# -- where outputs may come from, and how much of them (issue 28) ---------------------------

PUBLIC_API = DownloadPolicy(api_base_url="https://api.wavespeed.ai")


def _counting(hits: list[str], body: bytes = b"\x89PNG....") -> Any:
    def route(handler: Any) -> None:
        hits.append(handler.path)
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def _redirect(location: str) -> Any:
    def route(handler: Any) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names resolved to the addresses a test gives; a connection to anything but loopback fails the test.

    Nothing real answers for a private or metadata address here, and no packet may go to one.
    """
    import socket

    answers: dict[str, list[str]] = {}
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in answers:
            address = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (address, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    def connect(self: Any, address: Any) -> Any:
        if isinstance(address, tuple) and not str(address[0]).startswith(("127.", "::1")):
            raise AssertionError(f"a connection to {address[0]} was attempted")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return answers


@pytest.mark.parametrize("downloads", [None, PUBLIC_API], ids=["default", "public-api"])
def test_plain_http_outputs_are_refused_unless_the_api_is_on_loopback(
    local_http: LocalHTTPServer, tmp_path: Path, downloads: DownloadPolicy | None
) -> None:
    hits: list[str] = []
    local_http.routes["/img"] = _counting(hits)
    prediction = Prediction(id="h1", model="m/x", status="completed", outputs=[local_http.url("/img")])
    with pytest.raises(WaveSpeedStorageError, match="https only") as info:
        store_outputs(prediction, tmp_path, downloads=downloads)
    assert info.value.prediction_id == "h1"
    assert hits == [] and _files(tmp_path) == []
    # The same URL with the API on loopback (the emulator) is fetched.
    assert store_outputs(prediction, tmp_path, downloads=LOCAL_API) == [str(tmp_path / "h1_0.png")]


def test_a_loopback_address_is_refused_after_resolving_the_name(local_http: LocalHTTPServer, tmp_path: Path) -> None:
    hits: list[str] = []
    local_http.routes["/img"] = _counting(hits)
    url = f"https://localhost:{local_http.port}/img"  # https: only the address can refuse it
    prediction = Prediction(id="l1", model="m/x", status="completed", outputs=[url])
    with pytest.raises(WaveSpeedStorageError, match="loopback address") as info:
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=PUBLIC_API)
    assert "allow_private_output_urls" in str(info.value)
    assert hits == [] and _files(tmp_path) == []


@pytest.mark.parametrize(
    ("address", "kind"),
    [("169.254.169.254", "link-local"), ("10.1.2.3", "private"), ("fd00::1", "private"), ("::ffff:127.0.0.1", "loop")],
)
def test_private_and_metadata_addresses_are_refused_before_connecting(
    fake_dns: dict[str, list[str]], tmp_path: Path, address: str, kind: str
) -> None:
    fake_dns["cdn.example"] = [address]
    prediction = Prediction(id="m1", model="m/x", status="completed", outputs=["https://cdn.example/o.png"])
    with pytest.raises(WaveSpeedStorageError, match=kind):
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=PUBLIC_API)
    assert _files(tmp_path) == []


def test_the_connection_goes_to_the_address_that_was_checked(fake_dns: dict[str, list[str]], tmp_path: Path) -> None:
    # A rebinding name: public when first asked, loopback afterwards. One resolution per connection,
    # and the socket connects to the checked answer (here refused by the fixture: no traffic leaves).
    fake_dns["rebind.example"] = ["93.184.216.34", "127.0.0.1"]
    prediction = Prediction(id="r1", model="m/x", status="completed", outputs=["https://rebind.example/o.png"])
    with pytest.raises(AssertionError, match=r"connection to 93\.184\.216\.34 was attempted"):
        store_outputs(prediction, tmp_path, retry=RetryPolicy(max_retries=0), downloads=DownloadPolicy())
    assert fake_dns["rebind.example"] == ["127.0.0.1"]  # asked once: the second answer was never used
    assert _files(tmp_path) == []


def test_every_redirect_hop_is_checked(
    local_http: LocalHTTPServer, fake_dns: dict[str, list[str]], tmp_path: Path
) -> None:
    hits: list[str] = []
    local_http.routes["/img"] = _counting(hits)
    local_http.routes["/to-img"] = _redirect("/img")
    local_http.routes["/to-ftp"] = _redirect("ftp://127.0.0.1/etc/passwd")
    fake_dns["metadata.example"] = ["169.254.169.254"]
    local_http.routes["/to-metadata"] = _redirect("http://metadata.example/latest/meta-data/")
    outputs = [local_http.url("/to-img")]
    assert store_outputs(
        Prediction(id="d1", model="m/x", status="completed", outputs=outputs), tmp_path, downloads=LOCAL_API
    )
    assert hits == ["/img"]  # a relative redirect to an allowed place is followed
    for route, why in (("/to-ftp", "scheme"), ("/to-metadata", "link-local")):
        prediction = Prediction(id="d2", model="m/x", status="completed", outputs=[local_http.url(route)])
        with pytest.raises(WaveSpeedStorageError, match=why):
            store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=LOCAL_API)
    assert _files(tmp_path) == ["d1_0.png"]


def test_redirects_are_limited(local_http: LocalHTTPServer, tmp_path: Path) -> None:
    hops: list[str] = []

    def loop(handler: Any) -> None:
        hops.append(handler.path)
        _redirect("/loop")(handler)

    local_http.routes["/loop"] = loop
    prediction = Prediction(id="z1", model="m/x", status="completed", outputs=[local_http.url("/loop")])
    with pytest.raises(WaveSpeedStorageError, match="more than 5 redirects"):
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=LOCAL_API)
    assert len(hops) == 6 and _files(tmp_path) == []


def _endless(handler: Any) -> None:
    """A body with no announced length that goes on past any cap (bounded: it stops by itself)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "video/mp4")
    handler.end_headers()
    handler.close_connection = True
    with contextlib.suppress(OSError):
        for _ in range(64):
            handler.wfile.write(b"\0" * 65536)


def _announced_large(handler: Any) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "video/mp4")
    handler.send_header("Content-Length", str(10**12))
    handler.end_headers()
    handler.close_connection = True


@pytest.mark.parametrize("route", [_endless, _announced_large], ids=["unannounced", "announced"])
def test_a_download_over_the_size_cap_is_refused_and_leaves_nothing(
    local_http: LocalHTTPServer, tmp_path: Path, route: Any
) -> None:
    local_http.routes["/big"] = route
    previous = tmp_path / "b1_0.mp4"
    previous.write_bytes(b"the earlier copy")
    prediction = Prediction(id="b1", model="m/x", status="completed", outputs=[local_http.url("/big")])
    capped = DownloadPolicy(api_base_url=LOCAL_API.api_base_url, max_bytes=100_000)
    with pytest.raises(WaveSpeedStorageError, match="larger than the 100,000 bytes"):
        store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=capped, chunk_size=16384)
    assert _files(tmp_path) == ["b1_0.mp4"] and previous.read_bytes() == b"the earlier copy"


def test_a_download_that_trickles_meets_its_deadline(local_http: LocalHTTPServer, tmp_path: Path) -> None:
    stop = threading.Event()

    def trickle(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(999):  # one byte short, and slowly: bounded at about 10 s, ended early by the test
                if stop.wait(0.01):
                    return
                handler.wfile.write(b"x")
                handler.wfile.flush()

    local_http.routes["/slow"] = trickle
    prediction = Prediction(id="s1", model="m/x", status="completed", outputs=[local_http.url("/slow")])
    hurried = DownloadPolicy(api_base_url=LOCAL_API.api_base_url, timeout=0.2)
    try:
        with pytest.raises(WaveSpeedTransportError, match=r"did not finish within 0.2 s") as info:
            store_outputs(prediction, tmp_path, retry=FAST_RETRY, downloads=hurried)
    finally:
        stop.set()
    assert info.value.prediction_id == "s1"
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    "address",
    ["169.254.169.254", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "127.0.0.1", "0.0.0.0", "224.0.0.1",
     "240.0.0.1", "::1", "fe80::1", "fd12::1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe"],
)  # fmt: skip
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert PUBLIC_API.address_refusal(address) is not None
    assert DownloadPolicy(allow_private_addresses=True).address_refusal(address) is None  # the explicit opt-out


def test_public_addresses_are_allowed_and_loopback_only_for_a_local_api() -> None:
    for address in ("8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"):
        assert PUBLIC_API.address_refusal(address) is None
    assert LOCAL_API.address_refusal("127.0.0.1") is None and LOCAL_API.address_refusal("::1") is None
    assert LOCAL_API.address_refusal("169.254.169.254") is not None  # a local API allows loopback, not the rest
    assert PUBLIC_API.refusal("http://cdn.example/x.png") is not None
    assert LOCAL_API.refusal("http://127.0.0.1/x.png") is None


# -- shared directories (issue 28.5) ---------------------------------------------------------

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def _shared_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "airflow_provider_wavespeed.storage"]


@pytest.mark.parametrize(
    ("mode", "owner", "warning"),
    [
        (0o777, None, "writable by other users (mode 777, no sticky bit)"),
        (0o775, None, "writable by other users (mode 775, no sticky bit)"),
        (0o755, 65534, "belongs to another user (uid 65534)"),
        (0o1777, None, None),  # sticky, like /tmp: others cannot replace this user's files
        (0o700, None, None),
    ],
)
def test_storing_into_a_directory_others_control_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, owner: int | None, warning: str | None
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(mode)
    if owner is not None:
        if os.geteuid() != 0:
            pytest.skip("giving a directory to another user needs root")
        os.chown(out, owner, -1)
    prediction = Prediction(id="w1", model="m/x", status="completed", outputs=[PNG_B64])
    with caplog.at_level("WARNING", logger="airflow_provider_wavespeed.storage"):
        assert store_outputs(prediction, out) == [str(out / "w1_0.png")]
    messages = _shared_warnings(caplog)
    if warning is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warning in messages[0] and str(out) in messages[0]


def test_a_directory_under_a_shared_one_warns_too(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone may rename "mine" away and put their own directory there
    prediction = Prediction(id="w2", model="m/x", status="completed", outputs=[PNG_B64])
    with caplog.at_level("WARNING", logger="airflow_provider_wavespeed.storage"):
        store_outputs(prediction, shared / "mine")
    (message,) = _shared_warnings(caplog)
    assert f"the directory {shared} above it is writable by other users" in message


def test_the_hook_gives_its_connection_s_download_policy(
    wavespeed_connection: WaveSpeedEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The emulator's connection: the API is on loopback, so its loopback outputs are fetched.
    policy = WaveSpeedHook().download_policy()
    assert policy == DownloadPolicy(api_base_url=wavespeed_connection.url)
    prediction = _generate(wavespeed_connection)
    assert store_outputs(prediction, tmp_path, downloads=policy) == [str(tmp_path / f"{prediction.id}_0.jpeg")]
    # An API behind an internal proxy: the opt-out and the size cap come from the connection's extras.
    extra = {"allow_private_output_urls": "True", "max_output_bytes": 1000}
    connection = {"conn_type": "wavespeed", "host": "https://wavespeed.internal", "password": "k", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_PROXY", json.dumps(connection))
    proxied = WaveSpeedHook("wavespeed_proxy").download_policy()
    assert proxied.allow_private_addresses and proxied.max_bytes == 1000
    assert proxied.address_refusal("10.0.0.1") is None and proxied.refusal("http://wavespeed.internal/x") is not None
    connection["extra"] = {"allow_private_output_urls": "perhaps"}
    monkeypatch.setenv("AIRFLOW_CONN_WAVESPEED_PROXY", json.dumps(connection))
    with pytest.raises(WaveSpeedConfigError, match="allow_private_output_urls"):
        WaveSpeedHook("wavespeed_proxy").download_policy()


def test_an_ipv6_literal_host_is_resolved_and_checked(tmp_path: Path) -> None:
    import http.server
    import socket

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"\x89PNG")

        def log_message(self, *args: Any) -> None:
            pass

    try:
        server = Server(("::1", 0), Handler)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://[::1]:{server.server_address[1]}/a.png"
        prediction = Prediction(id="v6", model="m/x", status="completed", outputs=[url])
        local_v6 = DownloadPolicy(api_base_url="http://[::1]:1")
        assert store_outputs(prediction, tmp_path, downloads=local_v6) == [str(tmp_path / "v6_0.png")]
        refused = Prediction(id="v6", model="m/x", status="completed", outputs=[url.replace("http:", "https:")])
        with pytest.raises(WaveSpeedStorageError, match="resolves to ::1, a loopback address"):
            store_outputs(refused, tmp_path, downloads=PUBLIC_API)
    finally:
        server.shutdown()
        server.server_close()
