"""The README's numbers for one request and the triggers' shared pool, held by the code paths that use them.

README "Errors, retries and the submit rule" and "Waiting: polling policy": a submit outlasts up to 8 answers
of 429 (about 45-90 s of growing waits), a ``Retry-After`` over 120 s gives up at once, reads retry 4 times;
the triggers' shared pool holds 16 connections, each connect and read may take 30 s, a request waits at most
120 s for a free pooled connection. The numbers are written here as the README states them, so changing a
default without the README fails a test. Requests go to the emulator over loopback HTTP; the client's waits
are recorded instead of slept (no test waits minutes).
"""

from __future__ import annotations

import types
from typing import Any

import pytest

from airflow_provider_wavespeed.api import client as client_module
from airflow_provider_wavespeed.api.defaults import MAX_ANSWER_BYTES
from airflow_provider_wavespeed.api.errors import WaveSpeedRateLimitError, WaveSpeedServerError
from airflow_provider_wavespeed.api.retry import RetryPolicy
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.testing import WaveSpeedEmulator
from airflow_provider_wavespeed.triggers._shared_client import shared_client

FLUX = "wavespeed-ai/flux-dev"


@pytest.fixture
def client_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the seconds the sync client waits between attempts (not slept)."""
    waits: list[float] = []
    shim = types.SimpleNamespace(**{name: getattr(client_module.time, name) for name in dir(client_module.time)})
    shim.sleep = waits.append
    monkeypatch.setattr(client_module, "time", shim)
    return waits


def _requests(emulator: WaveSpeedEmulator, endpoint: str) -> int:
    return int(emulator.counters()["requests"].get(endpoint, 0))


def test_a_submit_outlasts_8_answers_of_429_with_45_to_90_s_of_waits(
    wavespeed_connection: WaveSpeedEmulator, client_waits: list[float]
) -> None:
    wavespeed_connection.add_fault("submit", "rate_limit", times=8, retry_after=0)
    prediction = WaveSpeedHook().submit(FLUX, {"prompt": "a busy minute"})
    assert prediction.id and _requests(wavespeed_connection, "submit") == 9
    assert wavespeed_connection.counters()["submissions"] == {FLUX: 1}
    assert len(client_waits) == 8
    assert 45 <= sum(client_waits) <= 92, client_waits  # "about 45-90 s in all" (+ up to 0.25 s jitter each)
    assert client_waits == sorted(client_waits[:6]) + client_waits[6:]  # growing, then at the 30 s ceiling


def test_the_9th_answer_of_429_fails_the_submit_and_nothing_was_created(
    wavespeed_connection: WaveSpeedEmulator, client_waits: list[float]
) -> None:
    wavespeed_connection.add_fault("submit", "rate_limit", times=9, retry_after=0)
    with pytest.raises(WaveSpeedRateLimitError):
        WaveSpeedHook().submit(FLUX, {"prompt": "a busier minute"})
    assert _requests(wavespeed_connection, "submit") == 9 and len(client_waits) == 8
    assert wavespeed_connection.counters()["submissions"] == {}


@pytest.mark.parametrize(("retry_after", "attempts"), [(120, 2), (121, 1)])
def test_a_retry_after_over_120_s_gives_up_at_once(
    wavespeed_connection: WaveSpeedEmulator, client_waits: list[float], retry_after: int, attempts: int
) -> None:
    wavespeed_connection.add_fault("balance", "rate_limit", times=1, retry_after=retry_after)
    if attempts == 1:
        with pytest.raises(WaveSpeedRateLimitError):
            WaveSpeedHook().get_balance()
    else:
        WaveSpeedHook().get_balance()
        assert client_waits[0] >= 120
    assert _requests(wavespeed_connection, "balance") == attempts


def test_a_read_retries_4_times_after_5xx(wavespeed_connection: WaveSpeedEmulator, client_waits: list[float]) -> None:
    wavespeed_connection.add_fault("balance", "http_error", times=None, status=503)
    with pytest.raises(WaveSpeedServerError):
        WaveSpeedHook().get_balance()
    assert _requests(wavespeed_connection, "balance") == 5 and len(client_waits) == 4


def test_the_one_request_limits_table(wavespeed_connection: WaveSpeedEmulator) -> None:
    """README's table of one request's limits, as ``RetryPolicy()`` and ``defaults`` hold them."""
    policy = RetryPolicy()
    limits = (policy.max_retries, policy.rate_limit_retries, policy.retry_after_max, policy.total_wait_max)
    assert limits == (4, 8, 120, 180)
    assert MAX_ANSWER_BYTES == 256 * 1024 * 1024
    assert WaveSpeedHook().get_conn().timeout == 30


async def test_the_triggers_shared_pool_16_connections_30_s_reads_120_s_pool_wait(
    wavespeed_connection: WaveSpeedEmulator,
) -> None:
    """The client every trigger of a connection shares, as the triggerer builds it."""
    async with shared_client("wavespeed_default") as client:
        await client.get_balance()  # the session is made on the first request, in this loop
        session: Any = client._session
        assert session.connector.limit == 16
        assert session.timeout.sock_read == 30 and session.timeout.sock_connect == 30
        assert session.timeout.connect == 120  # a free pooled connection, then the connect
        assert session.timeout.total is None  # per read: a slow but moving answer is never cut off
