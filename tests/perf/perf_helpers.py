"""Counting the connections a test's HTTP clients open, from inside the process and from outside."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import psutil
import pytest


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


class Connects:
    """TCP connects this process makes, by port (asyncio connects through ``socket.socket.connect``)."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def to(self, url: str) -> int:
        return self.ports.count(port_of(url))

    def clear(self) -> None:
        self.ports.clear()


def open_to(url: str) -> int:
    """Established connections from this process to the server of ``url`` (seen from outside, as ``ss`` would)."""
    port = port_of(url)
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[Connects]:
    """Count TCP connects for the duration of the test."""
    seen = Connects()
    original = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and len(address) >= 2:
            seen.ports.append(address[1])
        original(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield seen
