"""Counting the connections a test's HTTP clients open, from inside the process and from outside."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import psutil
import pytest


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


class Connects:
    """TCP connects this process makes during a test (asyncio connects through ``socket.socket.connect``).

    Records the remote port and the local one, so connections that earlier tests left open to the
    same (session-wide) emulator are never counted as this test's.
    """

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.local_ports: set[int] = set()

    def to(self, url: str) -> int:
        return self.ports.count(port_of(url))

    def clear(self) -> None:
        self.ports.clear()
        self.local_ports.clear()

    def open_to(self, url: str) -> int:
        """Established connections this test opened to the server of ``url`` (seen from outside, as ``ss`` would)."""
        port = port_of(url)
        return sum(
            1
            for conn in psutil.Process().net_connections(kind="tcp")
            if conn.raddr
            and conn.raddr.port == port
            and conn.laddr.port in self.local_ports
            and conn.status == psutil.CONN_ESTABLISHED
        )


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[Connects]:
    """Count TCP connects for the duration of the test."""
    seen = Connects()
    original = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2:
            seen.ports.append(address[1])
        try:
            original(sock, address)  # non-blocking: raises BlockingIOError while connecting
        finally:
            with contextlib.suppress(OSError):
                seen.local_ports.add(sock.getsockname()[1])

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield seen
