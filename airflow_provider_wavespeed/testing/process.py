"""The emulator in a process of its own, as a deployment's workers and triggerers reach the API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping

from .control import EmulatorControl

# The key travels in the child's environment: a command line is visible to every user in `ps`.
_KEY_ENV = "WAVESPEED_EMULATOR_PROCESS_KEY"


class EmulatorProcess:
    """``python -m airflow_provider_wavespeed.testing`` in its own process group.

    ``port=0`` picks a free port; ``url`` is where it listens once the constructor returns,
    ``control`` drives it over HTTP (faults, rate limits, counters). Use it as a context
    manager, or call :meth:`stop`; stopping ends the whole process group.
    """

    def __init__(
        self,
        api_key: str,
        *,
        duration: float | tuple[float, float] = 2.0,
        host: str = "127.0.0.1",
        port: int = 0,
        tier: str | None = None,
        starts_per_minute: int | None = None,
        concurrency: int | None = None,
        history_inputs: bool = True,
        history_lag: float = 0.0,
        allow_any_model: bool = False,
        models: Mapping[str, str] | None = None,
        log_requests: bool = False,
    ) -> None:
        """Start the process; return once it listens.

        ``tier`` (``bronze``/``silver``/``gold``/``ultra``) and the numbers set the account-tier
        limits the emulator starts with (and comes back to on ``reset()``); None: no tier limits.
        ``history_inputs``/``history_lag``: what its history shows (``WaveSpeedEmulator.set_history``).
        ``allow_any_model``/``models``: model ids beyond its catalog (``WaveSpeedEmulator``).
        ``log_requests``: its line per request on this process's stderr (off: ``--quiet``).
        """
        low, high = duration if isinstance(duration, tuple) else (duration, None)
        command = [sys.executable, "-m", "airflow_provider_wavespeed.testing", "--host", host, "--port", str(port)]
        command += ["--api-key-env", _KEY_ENV, "--duration", str(low)]
        if high is not None:
            command += ["--duration-max", str(high)]
        if tier is not None:
            command += ["--tier", tier]
        if starts_per_minute is not None:
            command += ["--starts-per-minute", str(starts_per_minute)]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        if not history_inputs:
            command += ["--history-without-inputs"]
        if history_lag:
            command += ["--history-lag", str(history_lag)]
        if allow_any_model:
            command += ["--allow-any-model"]
        for model, kind in (models or {}).items():
            command += ["--model", f"{model}={kind}"]
        if not log_requests:
            command += ["--quiet"]
        self.process = subprocess.Popen(  # noqa: S603 - our own module, run by this interpreter
            command,
            env={**os.environ, _KEY_ENV: api_key},
            stdout=subprocess.PIPE,  # only the "listening on <url>" line; logs go to stderr
            text=True,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        listening = re.search(r"listening on (\S+)", line)
        if listening is None:
            self.stop()
            raise RuntimeError(f"the WaveSpeed emulator did not start (exit code {self.process.returncode}): {line!r}")
        self.url = listening.group(1)
        self.control = EmulatorControl(self.url)

    @property
    def pid(self) -> int:
        """The process id (also its process group's)."""
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        if hasattr(self, "control"):
            self.control.close()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
