"""The control operations, written once for both ways of reaching an emulator.

:class:`~airflow_provider_wavespeed.testing.WaveSpeedEmulator` (same process) and
:class:`~airflow_provider_wavespeed.testing.EmulatorControl` (over HTTP) both
inherit these methods and only differ in how ``_control`` delivers a call, so a
test reads the same whichever it holds.
"""

from __future__ import annotations

from typing import Any, cast

# The names the HTTP endpoint ``POST /_emulator/control/<name>`` accepts.
CONTROL_METHODS = frozenset(
    {
        "reset",
        "add_fault",
        "remove_fault",
        "clear_faults",
        "set_outcome",
        "set_duration",
        "hold",
        "release",
        "set_rate_limit",
        "set_tier",
        "set_api_key",
        "set_balance",
        "set_webhook_secret",
        "set_price",
        "counters",
        "submissions",
        "prediction_state",
        "request_log",
    }
)


class EmulatorControlMethods:
    """Control operations on a WaveSpeed emulator; see ``EmulatorState`` for semantics."""

    def _control(self, method: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def reset(self) -> None:
        """Clear predictions, faults, outcomes, counters, rate limit; restore key, balance, durations."""
        self._control("reset")

    def add_fault(
        self,
        endpoint: str,
        kind: str,
        *,
        times: int | None = 1,
        status: int | None = None,
        retry_after: float | None = None,
        delay: float | None = None,
        model: str | None = None,
    ) -> str:
        """Make the next ``times`` (None: all) matching requests misbehave; returns the fault id."""
        fault_id = self._control(
            "add_fault",
            endpoint=endpoint,
            kind=kind,
            times=times,
            status=status,
            retry_after=retry_after,
            delay=delay,
            model=model,
        )
        return cast(str, fault_id)

    def remove_fault(self, fault_id: str) -> bool:
        """Remove a fault; False when it was already used up."""
        return cast(bool, self._control("remove_fault", fault_id=fault_id))

    def clear_faults(self) -> None:
        """Remove every fault."""
        self._control("clear_faults")

    def set_outcome(
        self,
        status: str,
        *,
        error: str | None = None,
        model: str | None = None,
        prompt_contains: str | None = None,
        times: int | None = None,
        code: int | None = None,
    ) -> None:
        """Make matching later submissions end ``failed``/``cancelled``/``timeout``, with failure ``code``
        (default 1403 for failed, 5004 for timeout, none for cancelled)."""
        self._control(
            "set_outcome",
            status=status,
            error=error,
            model=model,
            prompt_contains=prompt_contains,
            times=times,
            code=code,
        )

    def set_duration(self, seconds: float | tuple[float, float] | list[float], *, model: str | None = None) -> None:
        """How long later predictions take: seconds or a (min, max) range; per model when given."""
        self._control("set_duration", seconds=list(seconds) if isinstance(seconds, tuple) else seconds, model=model)

    def hold(
        self,
        *,
        model: str | None = None,
        prompt_contains: str | None = None,
        polls: int | None = None,
        times: int | None = None,
    ) -> None:
        """Keep matching later submissions ``processing`` until :meth:`release`, whatever the clock.

        ``polls=N``: each finishes by itself once N polls have seen it ``processing`` (poll N+1
        gets its outcome). ``times``: only the next ``times`` matching submissions.
        """
        self._control("hold", model=model, prompt_contains=prompt_contains, polls=polls, times=times)

    def release(self, prediction_id: str | None = None) -> int:
        """Finish held predictions now with their outcome; no id: all of them, and stop holding. Returns how many."""
        return cast(int, self._control("release", prediction_id=prediction_id))

    def set_rate_limit(self, requests_per_second: float | None) -> None:
        """Answer 429 beyond this many API requests per second; None removes the limit."""
        self._control("set_rate_limit", requests_per_second=requests_per_second)

    def set_tier(
        self, name: str | None = None, *, starts_per_minute: int | None = None, concurrency: int | None = None
    ) -> None:
        """Account-tier limits on submissions: ``bronze``/``silver``/``gold``/``ultra``, numbers overriding;
        None: no tier limits. Over the starts per minute: 429 + Retry-After; over the concurrency cap:
        queued ``created`` (FIFO) until a slot frees. Polls are not tier-limited."""
        self._control("set_tier", name=name, starts_per_minute=starts_per_minute, concurrency=concurrency)

    def set_api_key(self, key: str) -> None:
        """Accept only ``key`` from now on."""
        self._control("set_api_key", key=key)

    def set_balance(self, usd: float) -> None:
        """Set the account balance (USD)."""
        self._control("set_balance", usd=usd)

    def set_webhook_secret(self, secret: str) -> None:
        """Set the webhook signing secret (``whsec_...``)."""
        self._control("set_webhook_secret", secret=secret)

    def set_price(self, usd: float, *, model: str) -> None:
        """Charge a flat ``usd`` per submission of ``model``."""
        self._control("set_price", usd=usd, model=model)

    def counters(self) -> dict[str, Any]:
        """``{"requests": {...}, "submissions": {...}, "responses": {...}, "webhooks": {...}, "total_requests": n,
        "rate_limited": {endpoint: 429s}, "upload_put_with_authorization": n, "tier": None or {name, limits,
        "running", "queued", "max_queued", "queued_total", "rejected"}}``."""
        return cast("dict[str, Any]", self._control("counters"))

    def submissions(self) -> list[dict[str, Any]]:
        """Accepted submissions in order: ``{"id", "model", "inputs", "submitted_at"}``."""
        return cast("list[dict[str, Any]]", self._control("submissions"))

    def prediction_state(self, prediction_id: str) -> dict[str, Any]:
        """The emulator's view of a prediction (``completes_at``, ``polls``...); KeyError if unknown."""
        return cast("dict[str, Any]", self._control("prediction_state", prediction_id=prediction_id))

    def request_log(self, since: float | None = None) -> list[list[Any]]:
        """``[epoch, endpoint, status]`` per request since ``since`` (status 0 = dropped)."""
        return cast("list[list[Any]]", self._control("request_log", since=since))
