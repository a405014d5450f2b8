"""``python -m airflow_provider_wavespeed.testing``: run the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ._state import TIERS, resolve_tier
from .emulator import DEFAULT_API_KEY, DEFAULT_WEBHOOK_SECRET, WaveSpeedEmulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_wavespeed.testing",
        description="Run a local WaveSpeedAI API emulator.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key", default=None, help=f"accepted API key (default {DEFAULT_API_KEY!r})")
    key.add_argument("--api-key-env", metavar="VAR", help="read the API key from this environment variable")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds a prediction takes")
    parser.add_argument("--duration-max", type=float, help="draw each duration from [--duration, --duration-max]")
    parser.add_argument("--balance", type=float, default=100.0, help="account balance in USD")
    parser.add_argument("--webhook-secret", default=DEFAULT_WEBHOOK_SECRET)
    parser.add_argument("--access-log", action="store_true", help="log each request (off by default)")
    parser.add_argument(
        "--tier",
        choices=sorted(TIERS),
        help="account-tier limits on submissions: starts per minute (429 beyond) and concurrent tasks (queued beyond)",
    )
    parser.add_argument("--starts-per-minute", type=int, help="custom tier: generations started per minute")
    parser.add_argument("--concurrency", type=int, help="custom tier: concurrent tasks before new ones queue")
    parser.add_argument(
        "--history-without-inputs",
        action="store_true",
        help="the history lists no inputs, like the API's documented example (lost submits are then never adopted)",
    )
    parser.add_argument(
        "--history-lag", type=float, default=0.0, help="seconds before a new prediction appears in the history"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    api_key = args.api_key or DEFAULT_API_KEY
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "")
        if not api_key:
            parser.error(f"environment variable {args.api_key_env} is not set or empty")
    if args.history_lag < 0:
        parser.error("--history-lag must be >= 0")
    if args.duration_max is not None and args.duration_max < args.duration:
        parser.error("--duration-max must be >= --duration")
    duration = args.duration if args.duration_max is None else (args.duration, args.duration_max)
    try:
        resolve_tier(args.tier, args.starts_per_minute, args.concurrency)
    except ValueError as exc:
        parser.error(str(exc))

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    emulator = WaveSpeedEmulator(
        api_key=api_key,
        host=args.host,
        port=args.port,
        duration=duration,
        balance=args.balance,
        webhook_secret=args.webhook_secret,
        access_log=args.access_log,
        tier=args.tier,
        starts_per_minute=args.starts_per_minute,
        concurrency=args.concurrency,
        history_inputs=not args.history_without_inputs,
        history_lag=args.history_lag,
    )
    emulator.start()
    print(f"WaveSpeed emulator listening on {emulator.url}", flush=True)
    try:
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
