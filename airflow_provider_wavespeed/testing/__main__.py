"""``python -m airflow_provider_wavespeed.testing``: run the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from ._app import REQUEST_LOGGER
from ._models import KINDS
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
    parser.add_argument(
        "--quiet", action="store_true", help="no line per request (by default: method, path, status and model)"
    )
    parser.add_argument(
        "--allow-any-model",
        action="store_true",
        help="accept every well-formed model id with any inputs (by default an id outside the catalog gets 404, "
        "as from the API)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="ID[=KIND]",
        help=f"also know this model id (repeatable); KIND is one of {', '.join(sorted(KINDS))} (default text-to-image)",
    )
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


def _emulator(
    args: argparse.Namespace, api_key: str, duration: float | tuple[float, float], models: dict[str, str]
) -> WaveSpeedEmulator:
    """Build the emulator the arguments describe (ValueError for a bad one)."""
    return WaveSpeedEmulator(
        api_key=api_key,
        host=args.host,
        port=args.port,
        duration=duration,
        balance=args.balance,
        webhook_secret=args.webhook_secret,
        log_requests=not args.quiet,
        tier=args.tier,
        starts_per_minute=args.starts_per_minute,
        concurrency=args.concurrency,
        history_inputs=not args.history_without_inputs,
        history_lag=args.history_lag,
        allow_any_model=args.allow_any_model,
        models=models,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT or SIGTERM; return the exit code (1: it could not listen)."""
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
    models: dict[str, str] = {}
    for entry in args.model:
        model, _, kind = entry.partition("=")
        if kind and kind not in KINDS:
            parser.error(f"--model {entry}: the kind must be one of {', '.join(sorted(KINDS))}")
        models[model] = kind or "text-to-image"
    try:
        resolve_tier(args.tier, args.starts_per_minute, args.concurrency)
    except ValueError as exc:
        parser.error(str(exc))

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        emulator = _emulator(args, api_key, duration, models)
    except ValueError as exc:  # e.g. a --model that is no model id
        parser.error(str(exc))
    try:
        emulator.start()
    except OSError as exc:
        emulator.stop()
        if exc.errno == errno.EADDRINUSE:
            print(
                f"error: port {args.port} on {args.host} is already in use: pick another with --port "
                "(--port 0 picks a free one)",
                file=sys.stderr,
            )
        else:
            print(
                f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc} (see --host, --port)",
                file=sys.stderr,
            )
        return 1
    if not args.quiet:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        REQUEST_LOGGER.addHandler(handler)
        REQUEST_LOGGER.setLevel(logging.INFO)
        REQUEST_LOGGER.propagate = False
    # The key to use, only when it is the emulator's own public test key: one given with --api-key or
    # read from the environment may be a real key of the user's, and is never printed.
    key = f"API key: {api_key}" if api_key == DEFAULT_API_KEY else "API key: the one you gave"
    # Stays one line, the URL right after "listening on": EmulatorProcess and scripts read it.
    print(f"WaveSpeed emulator listening on {emulator.url} ({key})", flush=True)
    try:
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
