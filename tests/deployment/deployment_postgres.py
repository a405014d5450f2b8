"""A private PostgreSQL cluster on a free loopback port, in a temporary directory.

PostgreSQL refuses to run as root, so under root the cluster belongs to the ``postgres``
OS user (Debian's package creates it) and every server command runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Durability is worthless for a throwaway test database; speed on 2 cores is not.
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
}


def find_bin_dir() -> Path | None:
    """The directory holding initdb/pg_ctl/postgres: PATH first, then Debian's versioned dirs."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(Path(path).parts[-3].split(".")[0])
    )
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    """initdb + pg_ctl start on ``port``; :meth:`stop` ends the postmaster by process id."""

    def __init__(self, bin_dir: Path, port: int, database: str = "airflow") -> None:
        self.bin_dir = bin_dir
        self.port = port
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="wavespeed-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.pid: int | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    @property
    def url(self) -> str:
        """SQLAlchemy URL for Airflow (psycopg2 for sync; Airflow derives asyncpg for async)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            **self._user,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stdout}{result.stderr}")

    def start(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = " ".join(f"-c {name}={value}" for name, value in _SERVER_SETTINGS.items())
        options += f" -p {self.port} -k {self.root}"
        try:
            self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options)
            self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
            conn = self.connect(database="postgres")
            try:
                conn.autocommit = True  # CREATE DATABASE refuses to run in a transaction
                with conn.cursor() as cursor:
                    cursor.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                conn.close()
        except BaseException:
            self.stop()
            raise
        return self

    def connect(self, database: str | None = None) -> Any:
        import psycopg2  # the deployment extra; imported late so the quick suite collects without it

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database or self.database, connect_timeout=10
        )

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def dump(self) -> str:
        """The whole database as SQL text (pg_dump), for the secret audit."""
        result = subprocess.run(
            [str(self.bin_dir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return result.stdout

    def stop(self) -> None:
        """Stop the server (fast shutdown); SIGKILL the postmaster by pid if that fails."""
        if self.pid is None and (self.data / "postmaster.pid").exists():
            self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        if self.pid is not None:
            try:
                self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", "fast", "-D", str(self.data))
            except (RuntimeError, subprocess.TimeoutExpired):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                    time.sleep(0.5)
                except ProcessLookupError:
                    pass
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)
