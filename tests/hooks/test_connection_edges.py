"""Connection mistakes fail before any byte is sent, naming the field and the fix (issue 28); the key is masked.

A mistake in the connection is never reported as "may have created a paid prediction": the hook
refuses it before the client sends anything. The requests go to a tiny real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from airflow.providers.common.compat.sdk import redact
from hostile_http import HostileServer, envelope, prediction

from airflow_provider_wavespeed.api import WaveSpeedConfigError
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook

FLUX = "wavespeed-ai/flux-dev"


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "wavespeed", **fields}))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with HostileServer(lambda seen: envelope(prediction("p-port"))) as hostile:
        yield hostile


@pytest.mark.parametrize(
    ("host", "suggestion"),
    [("127.0.0.1:{port}", "http://127.0.0.1:{port}"), ("api.wavespeed.ai", "https://api.wavespeed.ai")],
)
def test_a_host_without_a_scheme_is_refused_before_any_byte(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, host: str, suggestion: str
) -> None:
    _set_conn(monkeypatch, "ws_bare", host=host.format(port=server.port), password="ws-key-bare-host")
    hook = WaveSpeedHook("ws_bare")
    with pytest.raises(WaveSpeedConfigError) as info:
        hook.submit(FLUX, {"prompt": "x"})
    message = str(info.value)
    assert "ws_bare" in message and "Host" in message and "scheme" in message
    assert suggestion.format(port=server.port) in message
    assert server.seen == []
    ok, tested = hook.test_connection()
    assert not ok and "scheme" in tested


def test_the_port_field_is_honoured(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a URI connection gives: wavespeed://http://:KEY@127.0.0.1:PORT puts the port in its own field.
    _set_conn(monkeypatch, "ws_port", host="http://127.0.0.1", port=server.port, password="ws-key-port-field")
    hook = WaveSpeedHook("ws_port")
    assert hook.get_credentials().base_url == server.url
    assert hook.submit(FLUX, {"prompt": "x"}).id == "p-port"
    monkeypatch.setenv("AIRFLOW_CONN_WS_URI", f"wavespeed://http://:ws-key-uri-form@127.0.0.1:{server.port}")
    assert WaveSpeedHook("ws_uri").submit(FLUX, {"prompt": "x"}).id == "p-port"
    assert len(server.seen) == 2


def test_a_port_in_the_host_and_another_in_the_port_field_is_refused(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_conn(monkeypatch, "ws_ports", host=server.url, port=server.port + 1, password="ws-key-two-ports")
    with pytest.raises(WaveSpeedConfigError) as info:
        WaveSpeedHook("ws_ports").submit(FLUX, {"prompt": "x"})
    assert "Port" in str(info.value) and str(server.port) in str(info.value) and str(server.port + 1) in str(info.value)
    assert server.seen == []
    _set_conn(monkeypatch, "ws_same", host=server.url, port=server.port, password="ws-key-same-port")
    assert WaveSpeedHook("ws_same").get_credentials().base_url == server.url


@pytest.mark.parametrize("host", ["http://127.0.0.1:99999", "http://127.0.0.1:http"])
def test_a_port_that_is_no_port_is_refused_before_any_byte(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    _set_conn(monkeypatch, "ws_bad_port", host=host, password="ws-key-bad-port")
    with pytest.raises(WaveSpeedConfigError, match="port that is not a number from 1 to 65535") as info:
        WaveSpeedHook("ws_bad_port").submit(FLUX, {"prompt": "x"})
    assert "ws_bad_port" in str(info.value)


def test_a_port_field_that_is_no_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, "ws_port_field", host="http://127.0.0.1", port=70000, password="ws-key-port-70000")
    with pytest.raises(WaveSpeedConfigError, match=r"Port field 70000 is not a TCP port \(1-65535\)"):
        WaveSpeedHook("ws_port_field").get_credentials()


def test_a_port_without_a_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, "ws_port_only", port=8080, password="ws-key-port-only")
    with pytest.raises(WaveSpeedConfigError, match=r"Port field is 8080 but its Host field is empty"):
        WaveSpeedHook("ws_port_only").get_credentials()


@pytest.mark.parametrize("password", ["ws-first-half\nws-second-half", "ws-first-half\u2028ws-second", "ws-café-key"])
def test_a_key_no_header_can_carry_is_refused_naming_the_field_never_the_key(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    _set_conn(monkeypatch, "ws_key", host=server.url, password=password)
    hook = WaveSpeedHook("ws_key")
    with pytest.raises(WaveSpeedConfigError) as info:
        hook.submit(FLUX, {"prompt": "x"})
    ok, tested = hook.test_connection()
    assert not ok
    for text in (str(info.value), tested):
        assert "ws_key" in text and "password field" in text and "one line" in text
        assert "ws-first" not in text and "ws-second" not in text and "café" not in text
    assert server.seen == []


def test_the_key_is_masked_as_it_is_sent(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow masks the password field as stored; what goes in the header is the key without its
    # surrounding whitespace, and a key from WAVESPEED_API_KEY is masked by nobody else.
    _set_conn(monkeypatch, "ws_spaced", host=server.url, password="  ws-key-spaced-0451\n")
    WaveSpeedHook("ws_spaced").submit(FLUX, {"prompt": "x"})
    assert server.seen[0].headers["Authorization"] == "Bearer ws-key-spaced-0451"
    assert "ws-key-spaced-0451" not in str(redact("sent Bearer ws-key-spaced-0451 to the API"))

    monkeypatch.setenv("WAVESPEED_API_KEY", "ws-key-from-env-0452")
    WaveSpeedHook("no_such_connection").get_credentials()
    assert "ws-key-from-env-0452" not in str(redact("key ws-key-from-env-0452"))

    monkeypatch.setenv("WAVESPEED_API_KEY", "ws-key-from-env-async-0453")
    asyncio.run(WaveSpeedHook("no_such_connection").aget_credentials())
    assert "ws-key-from-env-async-0453" not in str(redact("key ws-key-from-env-async-0453"))


class _TriggererComms:
    """The supervisor channel of an Airflow 3.0 triggerer, as its TriggerCommsDecoder.send works: a sync
    bridge (asgiref's async_to_sync) to its async send, which refuses to run in the event loop's thread."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, msg: object) -> None:
        from asgiref.sync import async_to_sync

        async_to_sync(self.asend)(msg)

    async def asend(self, msg: object) -> None:
        self.sent.append(msg)


@pytest.mark.skipif(
    hasattr(__import__("airflow.hooks.base", fromlist=["BaseHook"]).BaseHook, "aget_connection"),
    reason="Airflow 3.0's path: 3.1+ read connections asynchronously",
)
def test_airflow_30_a_trigger_reads_a_connection_with_extra_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow 3.0's Connection.extra_dejson masks the extra through the supervisor: in a triggerer's
    # event loop that raised RuntimeError, and every trigger of a connection with extra failed at start.
    from airflow.sdk.execution_time import task_runner

    comms = _TriggererComms()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    _set_conn(
        monkeypatch,
        "ws_extra",
        host="http://127.0.0.1:9",
        password="ws-key-extra-0454",
        extra={"max_submissions_per_minute": 30},
    )
    creds = asyncio.run(WaveSpeedHook("ws_extra").aget_credentials())
    assert (creds.api_key, creds.max_submissions_per_minute) == ("ws-key-extra-0454", 30)
    assert comms.sent  # the extra and the key were masked through the supervisor, as in a triggerer
