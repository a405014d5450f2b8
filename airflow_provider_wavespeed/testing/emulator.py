"""A local WaveSpeedAI API emulator served by uvicorn on loopback.

Use it from tests (``with WaveSpeedEmulator() as emulator: ...``), from the
command line (``python -m airflow_provider_wavespeed.testing``) or through the
pytest fixtures in :mod:`airflow_provider_wavespeed.testing.pytest_plugin`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import uvicorn

from ._app import EmulatorApp
from ._control_api import EmulatorControlMethods
from ._state import Duration, EmulatorState, resolve_tier

DEFAULT_API_KEY = "wavespeed-emulator-key"
DEFAULT_WEBHOOK_SECRET = "whsec_emulator"  # noqa: S105 - a public test default, not a credential


class WaveSpeedEmulator(EmulatorControlMethods):
    """The WaveSpeed REST API on ``127.0.0.1``, with faults and counters for tests.

    ``start()`` serves it from a daemon thread with its own event loop; every
    control method (``add_fault``, ``counters``...) acts on the same state the
    server uses, and ``EmulatorControl(emulator.url)`` offers them over HTTP.
    """

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        duration: Duration = 2.0,
        balance: float = 100.0,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        http: str = "auto",
        log_requests: bool = False,
        tier: str | None = None,
        starts_per_minute: int | None = None,
        concurrency: int | None = None,
        history_inputs: bool = True,
        history_lag: float = 0.0,
        allow_any_model: bool = False,
        models: Mapping[str, str] | None = None,
    ) -> None:
        """Configure the emulator; nothing listens before :meth:`start`.

        ``duration`` is seconds or a (min, max) range; ``http`` picks uvicorn's protocol ("auto",
        "h11" or "httptools"). ``log_requests`` logs one line per request (method, path, status,
        model) on the ``airflow_provider_wavespeed.testing.requests`` logger; off by default.
        ``tier``/``starts_per_minute``/``concurrency`` are the account-tier limits it starts with
        (see ``set_tier``; ``reset()`` keeps them). ``history_inputs``/``history_lag`` say what the
        history shows (see ``set_history``: False lists no inputs, like the API's documented example;
        a lag lists new predictions late). Model ids: the catalog's and ``models`` ({id: kind}, e.g.
        ``{"acme/upscaler": "image-to-image"}``) are known, any other is answered 404 as the API does,
        unless ``allow_any_model`` (see ``allow_any_model``/``register_model``; ``reset()`` keeps these).
        """
        self.state = EmulatorState(
            api_key=api_key,
            duration=duration,
            balance=balance,
            webhook_secret=webhook_secret,
            tier=resolve_tier(tier, starts_per_minute, concurrency),
            history_inputs=history_inputs,
            history_lag=history_lag,
            allow_any_model=allow_any_model,
            models=models,
        )
        self.host = host
        self.port = port
        self._http = http
        self._log_requests = log_requests
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._app: EmulatorApp | None = None

    @property
    def url(self) -> str:
        """Base URL without ``/api/v3``, e.g. ``http://127.0.0.1:41234``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The key currently accepted."""
        return self.state.api_key

    def _control(self, method: str, **kwargs: Any) -> Any:
        return getattr(self.state, method)(**kwargs)

    def start(self, timeout: float = 10.0) -> WaveSpeedEmulator:
        """Serve in a background thread; returns once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        # Binding here (not in uvicorn) makes port 0 resolve before start() returns.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        app = EmulatorApp(self.state, log_requests=self._log_requests)
        config = uvicorn.Config(
            app,
            http=self._http,
            lifespan="off",
            log_config=None,  # leave the host process's logging setup alone
            log_level="warning",
            access_log=False,  # our own request log (log_requests) names the model too
            # Pollers come back every few seconds: keep their connections open
            # longer than that so reuse does not race the server-side close.
            timeout_keep_alive=75,
            backlog=8192,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="wavespeed-emulator", daemon=True)
        self._server, self._thread, self._socket, self._app = server, thread, sock, app
        logging.getLogger("uvicorn.error").addFilter(app)  # quiet about this app's deliberate drops only
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the WaveSpeed emulator did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (idempotent) and remove uploaded files."""
        server, thread, sock, app = self._server, self._thread, self._socket, self._app
        self._server = self._thread = self._socket = self._app = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout)
        if sock is not None:
            sock.close()
        if app is not None:
            logging.getLogger("uvicorn.error").removeFilter(app)
        self.state.close()

    def __enter__(self) -> WaveSpeedEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = "running" if self._thread is not None else "stopped"
        return f"<WaveSpeedEmulator {self.url} {running}>"
