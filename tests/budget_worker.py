"""One OS process submitting through WaveSpeedHook, for tests/hooks/test_shared_budget_processes.py.

``python budget_worker.py CONN_ID BUDGET EPOCH SPEED INDEX API COUNT``: builds the hook and its
client, prints ``ready``, waits for a line on stdin (so every process starts at once, however
long its imports took), submits ``COUNT`` predictions and prints one JSON line (both lines after
:data:`PREFIX`): per submission,
``{"id": ...}`` or ``{"refused": "<the 429's message>"}``. BUDGET ``per-process`` gives the process
its own budget (the behaviour before the host-wide one). The provider's clock runs ``SPEED`` times
faster than the real one from ``EPOCH`` (the emulator's too, in the test), the same in every process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

# Airflow 3.0 logs to stdout: the lines for the test carry this prefix.
PREFIX = "budget-worker: "
_real_sleep = time.sleep
_real_async_sleep = asyncio.sleep


class FastClock:
    """``time`` as the patched modules see it: wall and monotonic clocks ``speed`` times faster from ``epoch``."""

    def __init__(self, epoch: float, speed: float) -> None:
        self.epoch, self.speed = epoch, speed

    def time(self) -> float:
        # From the real wall clock: the same fast time in every process.
        return self.epoch + (time.time() - self.epoch) * self.speed

    monotonic = time

    def time_ns(self) -> int:
        return int(self.time() * 1e9)

    def sleep(self, seconds: float) -> None:
        _real_sleep(max(0.0, seconds) / self.speed)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class FastAsyncio:
    """``asyncio`` whose ``sleep`` follows a :class:`FastClock`."""

    def __init__(self, clock: FastClock) -> None:
        self._clock = clock

    async def sleep(self, seconds: float, result: Any = None) -> Any:
        return await _real_async_sleep(max(0.0, seconds) / self._clock.speed, result)

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)


def main(conn_id: str, budget: str, epoch: str, speed: str, index: str, api: str, count: str) -> None:
    import airflow_provider_wavespeed.api._limiter as limiter_module
    import airflow_provider_wavespeed.api._shared_budget as shared_budget_module
    import airflow_provider_wavespeed.api.client as client_module
    import airflow_provider_wavespeed.hooks.wavespeed as hook_module
    from airflow_provider_wavespeed.api.errors import WaveSpeedRateLimitError
    from airflow_provider_wavespeed.api.retry import RetryPolicy

    clock = FastClock(float(epoch), float(speed))
    for module in (limiter_module, client_module):
        module.time = clock  # type: ignore[attr-defined]
        module.asyncio = FastAsyncio(clock)  # type: ignore[attr-defined]
    if budget == "per-process":
        shared_budget_module.shared_store = lambda *args: None  # type: ignore[assignment]
    # A 429 is reported, not retried: the test counts them.
    hook = hook_module.WaveSpeedHook(conn_id, retry=RetryPolicy(rate_limit_retries=0))
    prompts = [f"process {index}, picture {n}" for n in range(int(count))]
    model = "wavespeed-ai/flux-dev"

    def outcome(submit: Any, prompt: str) -> dict[str, str]:
        try:
            return {"id": submit(model, {"prompt": prompt}).id}
        except WaveSpeedRateLimitError as exc:
            return {"refused": str(exc)}

    if api == "sync":
        hook.client  # noqa: B018  (the client and its budget, before the start)
        print(PREFIX + "ready", flush=True)
        sys.stdin.readline()
        results = [outcome(hook.submit, prompt) for prompt in prompts]
    else:

        async def run() -> list[dict[str, str]]:
            async with await hook.aget_client() as client:
                print(PREFIX + "ready", flush=True)
                sys.stdin.readline()  # nothing else runs on this loop yet
                done = []
                for prompt in prompts:
                    try:
                        done.append({"id": (await client.submit(model, {"prompt": prompt})).id})
                    except WaveSpeedRateLimitError as exc:
                        done.append({"refused": str(exc)})
                return done

        results = asyncio.run(run())
    print(PREFIX + json.dumps(results), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
