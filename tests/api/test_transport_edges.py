"""The transport's promises at their edges (issue 28): what is uncertain, what no text carries, what is bounded.

- A mistake found before any byte leaves is never "may have created a paid prediction"; an answer the
  API gave under HTTP 2xx with an envelope code we cannot read is.
- No redirect is followed; no ``~/.netrc`` credential is sent; proxies from the environment still work.
- No error text carries the key or the query of a signed URL.
- Answers are read with a size cap; ``Retry-After`` past the longest we obey, and a request's total
  wait, give up.

Hostile answers come from a tiny real HTTP server on 127.0.0.1 (``hostile_http``); the rest from the emulator.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_http import Answer, HostileServer, Seen, closed_port, envelope, prediction, self_signed

from airflow_provider_wavespeed.api import (
    AsyncWaveSpeedClient,
    RetryPolicy,
    WaveSpeedAPIError,
    WaveSpeedBadRequestError,
    WaveSpeedClient,
    WaveSpeedConfigError,
    WaveSpeedRateLimitError,
    WaveSpeedResponseError,
    WaveSpeedSubmitUncertainError,
    WaveSpeedTransportError,
)
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
KEY = "ws-test-key-0123456789"
FAST = RetryPolicy(max_retries=2, rate_limit_retries=2, backoff_base=0.01, backoff_max=0.05)


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.fixture
def server(no_proxy_env: None) -> Iterator[HostileServer]:
    with HostileServer() as hostile:
        yield hostile


def _submit_sync(url: str, key: str = KEY, retry: RetryPolicy = FAST) -> Any:
    with WaveSpeedClient(key, url, retry=retry) as client:
        return client.submit(FLUX, {"prompt": "x"})


def _submit_async(url: str, key: str = KEY, retry: RetryPolicy = FAST) -> Any:
    async def go() -> Any:
        async with AsyncWaveSpeedClient(key, url, retry=retry) as client:
            return await client.submit(FLUX, {"prompt": "x"})

    return asyncio.run(go())


SUBMITS = pytest.mark.parametrize("submit", [_submit_sync, _submit_async], ids=["sync", "async"])


# -- local mistakes fail before any byte; only what may have reached the API is uncertain -------------


@SUBMITS
@pytest.mark.parametrize(
    "key", ["ws-first-half\nws-second-half", "ws-first-half\r\nInjected: yes", "ws-key-with-é-in-it", "ws-key-€uro"]
)
def test_a_key_no_header_can_carry_is_refused_before_any_byte(server: HostileServer, submit: Any, key: str) -> None:
    with pytest.raises(WaveSpeedConfigError) as info:
        submit(server.url, key)
    message = str(info.value)
    assert "API key" in message and "one line" in message  # names the value and the fix
    assert not any(part in message for part in ("ws-first-half", "ws-second-half", "ws-key-with", "ws-key-"))
    assert server.seen == []


@SUBMITS
def test_a_proxy_that_cannot_be_reached_is_not_an_unknown_outcome(
    no_proxy_env: None, monkeypatch: pytest.MonkeyPatch, submit: Any
) -> None:
    # The API would be this server, but the proxy in front of it refuses connections: nothing was sent.
    with HostileServer() as api:
        proxy = f"http://127.0.0.1:{closed_port()}"
        monkeypatch.setenv("HTTP_PROXY", proxy)
        monkeypatch.setenv("http_proxy", proxy)
        with pytest.raises(WaveSpeedTransportError) as info:
            submit(api.url)
        assert info.value.connected is False
        assert api.seen == []


@SUBMITS
def test_a_certificate_not_trusted_is_not_an_unknown_outcome(no_proxy_env: None, tmp_path: Path, submit: Any) -> None:
    # The certificate is checked in the TLS handshake, before the request is written.
    with HostileServer(tls=self_signed(tmp_path)) as api:
        with pytest.raises(WaveSpeedTransportError) as info:
            submit(api.url)
        assert info.value.connected is False and "certificate" in str(info.value).lower()
        assert api.seen == []


@SUBMITS
@pytest.mark.parametrize(("status", "code"), [(200, 201), (200, 202), (201, 201), (202, 0), (200, 302), (200, 1200)])
def test_an_unexpected_envelope_code_under_2xx_on_a_submit_is_uncertain(
    server: HostileServer, submit: Any, status: int, code: int
) -> None:
    server.script = lambda seen: envelope(prediction(), code=code, status=status, message="queued")
    with pytest.raises(WaveSpeedSubmitUncertainError) as info:
        submit(server.url)
    assert "may have reached the API" in str(info.value)
    assert len(server.seen) == 1  # and never repeated


@SUBMITS
def test_a_refusal_in_the_envelope_under_http_200_is_still_a_refusal(server: HostileServer, submit: Any) -> None:
    server.script = lambda seen: envelope(None, code=400, message="prompt is required")
    with pytest.raises(WaveSpeedBadRequestError, match="prompt is required"):
        submit(server.url)


@SUBMITS
def test_a_success_envelope_under_http_201_is_a_success(server: HostileServer, submit: Any) -> None:
    server.script = lambda seen: envelope(prediction("p201"), status=201)
    assert submit(server.url).id == "p201"


# -- no redirect is followed ----------------------------------------------------------------------


@SUBMITS
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_no_redirect_is_followed_and_a_redirected_submit_created_nothing(
    server: HostileServer, submit: Any, status: int
) -> None:
    def script(seen: Seen) -> Answer:
        if seen.path.startswith("/elsewhere"):
            return envelope(prediction("followed"))
        # Even a success envelope in a redirect's body is not an answer.
        return envelope(prediction("in-the-redirect"), status=status, Location=f"{server.url}/elsewhere")

    server.script = script
    with pytest.raises(WaveSpeedAPIError) as info:
        submit(server.url)
    assert not isinstance(info.value, WaveSpeedSubmitUncertainError)
    assert info.value.status_code == status and "redirect" in str(info.value) and "base URL" in str(info.value)
    assert [seen.path for seen in server.seen] == [f"/api/v3/{FLUX}"]


def test_a_redirected_poll_is_not_followed_either(server: HostileServer) -> None:
    server.script = lambda seen: Answer(302, b"", {"Location": f"{server.url}/elsewhere"})
    with WaveSpeedClient(KEY, server.url, retry=FAST) as client, pytest.raises(WaveSpeedAPIError) as info:
        client.get_prediction("abc")
    assert info.value.status_code == 302 and info.value.prediction_id == "abc"
    assert len(server.seen) == 1


# -- no ambient credentials; proxies from the environment still work -----------------------------------


@pytest.fixture
def netrc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A HOME whose ~/.netrc has a ``default`` entry: what requests and aiohttp would send anywhere."""
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("default login netrc-user password netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    return "Basic bmV0cmMtdXNlcjpuZXRyYy1wYXNzd29yZA=="  # what netrc-user:netrc-password would send


def test_no_netrc_credential_replaces_the_key_or_reaches_the_upload_host(
    netrc_home: str, wavespeed_emulator: WaveSpeedEmulator, no_proxy_env: None
) -> None:
    with WaveSpeedClient(wavespeed_emulator.api_key, wavespeed_emulator.url, retry=FAST) as client:
        assert client.get_balance() > 0  # the emulator saw the Bearer key, not netrc's Basic credentials
        assert client.submit(FLUX, {"prompt": "x"}).id
        client.upload_media(b"abc", filename="a.png")
    counters = wavespeed_emulator.counters()
    assert counters["requests"].get("upload_put") == 1 and counters["upload_put_with_authorization"] == 0


@SUBMITS
def test_the_api_sees_the_bearer_key_and_nothing_from_netrc(
    netrc_home: str, server: HostileServer, submit: Any
) -> None:
    server.script = lambda seen: envelope(prediction())
    submit(server.url)
    assert [seen.headers.get("Authorization") for seen in server.seen] == [f"Bearer {KEY}"]


def test_an_aiohttp_session_that_would_read_netrc_is_refused(netrc_home: str, server: HostileServer) -> None:
    import aiohttp

    async def go() -> None:
        async with aiohttp.ClientSession(trust_env=True) as session:
            AsyncWaveSpeedClient(KEY, server.url, retry=FAST, session=session)

    with pytest.raises(WaveSpeedConfigError, match="trust_env=False"):
        asyncio.run(go())
    assert server.seen == []


@SUBMITS
def test_an_http_proxy_from_the_environment_carries_the_requests(
    netrc_home: str, no_proxy_env: None, monkeypatch: pytest.MonkeyPatch, submit: Any
) -> None:
    api_url = f"http://127.0.0.1:{closed_port()}"  # nothing there: only the proxy can answer
    with HostileServer(lambda seen: envelope(prediction("via-proxy"))) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        assert submit(api_url).id == "via-proxy"
        assert [seen.path for seen in proxy.seen] == [f"{api_url}/api/v3/{FLUX}"]  # a forward proxy's request
        assert proxy.seen[0].headers.get("Authorization") == f"Bearer {KEY}"


@SUBMITS
def test_no_proxy_sends_around_the_proxy(
    no_proxy_env: None, monkeypatch: pytest.MonkeyPatch, server: HostileServer, submit: Any
) -> None:
    server.script = lambda seen: envelope(prediction("direct"))
    proxy = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    assert submit(server.url).id == "direct"


# -- no text carries a signed URL's query ------------------------------------------------------------


def test_a_failed_put_names_no_signed_query(server: HostileServer) -> None:
    signed = (
        f"http://127.0.0.1:{closed_port()}/bucket/a.png?X-Amz-Signature=sig-SECRET-123&X-Amz-Credential=cred-SECRET"
    )

    def script(seen: Seen) -> Answer:
        return envelope({"download_url": "https://cdn.example/a.png", "upload": {"method": "PUT", "url": signed}})

    server.script = script
    with WaveSpeedClient(KEY, server.url, retry=FAST) as client, pytest.raises(WaveSpeedTransportError) as info:
        client.upload_media(b"abc", filename="a.png")
    texts = [str(info.value), repr(info.value)]
    cause = info.value.__cause__ or info.value.__context__
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    assert "PUT to 127.0.0.1" in texts[0]
    assert not any("SECRET" in text for text in texts)


def test_an_unusable_upload_ticket_is_shown_without_its_signed_queries(server: HostileServer) -> None:
    signed = "https://storage.example/bucket/a.png?X-Amz-Signature=sig-SECRET-123"
    ticket = {"download_url": "https://cdn.example/a.png?token=dl-SECRET", "upload": {"method": "POST", "url": signed}}
    server.script = lambda seen: envelope(ticket)
    with WaveSpeedClient(KEY, server.url, retry=FAST) as client, pytest.raises(WaveSpeedResponseError) as info:
        client.upload_media(b"abc", filename="a.png")
    assert "storage.example/bucket/a.png" in str(info.value) and "SECRET" not in str(info.value)


# -- answers are read with a size cap; the excerpt is built on error only --------------------------------


def _endless(chunk: bytes) -> Iterator[bytes]:
    while True:
        yield chunk


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@SUBMITS
def test_an_answer_over_the_size_cap_is_refused_and_a_submit_is_uncertain(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, submit: Any, declared: bool
) -> None:
    from airflow_provider_wavespeed.api._base import BaseClient

    monkeypatch.setattr(BaseClient, "max_answer_bytes", 64 * 1024)
    head = b'{"code": 200, "message": "success", "data": {"id": "p1", "status": "created", "pad": "'
    if declared:
        server.script = lambda seen: Answer(200, head + b"x" * 200_000 + b'"}}')
    else:
        server.script = lambda seen: Answer(200, _endless(b"x" * 16 * 1024))
    with pytest.raises(WaveSpeedSubmitUncertainError) as info:
        submit(server.url)
    assert "64 KiB" in str(info.value)
    assert len(server.seen) == 1


def test_a_read_over_the_size_cap_is_a_response_error(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_wavespeed.api._base import BaseClient

    monkeypatch.setattr(BaseClient, "max_answer_bytes", 64 * 1024)
    server.script = lambda seen: Answer(200, _endless(b"y" * 16 * 1024))
    with WaveSpeedClient(KEY, server.url, retry=FAST) as client, pytest.raises(WaveSpeedResponseError) as info:
        client.get_prediction("abc")
    assert info.value.prediction_id == "abc" and "64 KiB" in str(info.value)
    assert len(server.seen) == 1  # the same answer would come again: not retried


def test_a_large_answer_costs_about_its_own_size(server: HostileServer) -> None:
    # A completed prediction whose answer is 4 MB of short words: building an excerpt of the whole body
    # (split into words) for every answer cost ~25 times its size; a successful answer needs none.
    words = " ".join(["word"] * 800_000)
    server.script = lambda seen: envelope(prediction("big", status="completed", outputs=["u"], error="", note=words))
    with WaveSpeedClient(KEY, server.url, retry=FAST) as client:
        client.get_prediction("big")  # warm up: imports and the connection
        tracemalloc.start()
        try:
            assert client.get_prediction("big").id == "big"
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 6 * len(words), f"reading a {len(words)} byte answer took {peak} bytes at its peak"


# -- Retry-After and the total wait are bounded --------------------------------------------------------


@SUBMITS
def test_a_retry_after_past_the_longest_we_obey_gives_up_at_once(server: HostileServer, submit: Any) -> None:
    server.script = lambda seen: envelope(None, code=429, status=429, message="slow down", **{"Retry-After": "3"})
    policy = RetryPolicy(rate_limit_retries=8, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.5)
    with pytest.raises(WaveSpeedRateLimitError) as info:  # a 429 created nothing: not uncertain
        submit(server.url, retry=policy)
    assert info.value.retry_after == 3.0 and "Retry-After" in str(info.value)
    assert len(server.seen) == 1


@SUBMITS
def test_the_total_wait_of_one_request_is_bounded(server: HostileServer, submit: Any) -> None:
    # Each 429 asks for 0.6 s: the first wait (0.6-0.85 s) fits in 1 s, a second would not.
    server.script = lambda seen: envelope(None, code=429, status=429, **{"Retry-After": "0.6"})
    policy = RetryPolicy(rate_limit_retries=8, backoff_base=0.01, backoff_max=0.05, total_wait_max=1.0)
    with pytest.raises(WaveSpeedRateLimitError):
        submit(server.url, retry=policy)
    assert len(server.seen) == 2


def test_the_shipped_bounds_hold_a_whole_minute_and_no_more_than_a_few() -> None:
    from airflow_provider_wavespeed.api import defaults

    policy = RetryPolicy()
    assert policy.retry_after_max == defaults.DEFAULT_RETRY_AFTER_MAX >= 60  # a tier's minute is obeyed
    assert 2 * policy.retry_after_max > policy.total_wait_max == defaults.DEFAULT_TOTAL_WAIT_MAX >= 120
    limited = WaveSpeedRateLimitError("slow down", status_code=429, retry_after=60.0)
    assert policy.next_delay(1, limited, idempotent=False, what="submit", waited=0.0) >= 60.0
    with pytest.raises(WaveSpeedRateLimitError):
        policy.next_delay(3, limited, idempotent=False, what="submit", waited=policy.total_wait_max - 30)
