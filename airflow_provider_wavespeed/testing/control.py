"""Control an emulator running elsewhere (another process) over HTTP."""

from __future__ import annotations

from typing import Any

import requests

from ._control_api import EmulatorControlMethods

_ERRORS: dict[str, type[Exception]] = {
    "KeyError": KeyError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "AttributeError": AttributeError,
}


class EmulatorControl(EmulatorControlMethods):
    """The emulator's control methods, sent to ``<url>/_emulator/control/<method>``.

    Errors come back as the exception type the emulator raised (KeyError for an
    unknown prediction, ValueError for a bad argument).
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _control(self, method: str, **kwargs: Any) -> Any:
        response = self._session.post(f"{self.url}/_emulator/control/{method}", json=kwargs, timeout=self.timeout)
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                kind, message = error["type"], error["message"]
            except (ValueError, KeyError, TypeError):
                response.raise_for_status()
                raise RuntimeError(f"unexpected answer from {self.url}: {response.text[:200]}") from None
            raise _ERRORS.get(kind, RuntimeError)(message)
        return response.json()["result"]

    def health(self) -> bool:
        """Return True when the emulator answers."""
        try:
            return self._session.get(f"{self.url}/_emulator/health", timeout=self.timeout).ok
        except requests.RequestException:
            return False

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def __enter__(self) -> EmulatorControl:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
