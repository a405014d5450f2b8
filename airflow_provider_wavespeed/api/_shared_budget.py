"""One submission budget for every process on this host that submits for the same account.

A :class:`~._limiter.TokenBucket` keeps its state (schedule, pause, rate in force) in a
:class:`FileBucketStore`: a 48-byte file read and rewritten under ``fcntl.flock`` on each
reservation (tens of microseconds). Every task process of a LocalExecutor, every Celery worker
process on one host, and the threads and coroutines of each, then draw from one budget, and a
429's pause and rate cut reach them all.

Where: ``$WAVESPEED_BUDGET_DIR`` when set, else ``<tempdir>/wavespeed-budget-<uid>``; it must be a
local file system (``flock`` over NFS is not reliable). Containers that should share a budget
must share that directory. The file name is a hash of the base URL, a hash of the API key and
the rate: never the key. Files are created 0o600, so only processes of the same user share a
budget: a process that can open the file can hold its lock and stall every submit, and an
Airflow deployment's workers run as one user.

Anything that keeps the file from being used (no ``fcntl``: not POSIX; a directory another user
owns or others may write, the default one or ``$WAVESPEED_BUDGET_DIR`` alike; a file that cannot
be opened; a lock not taken within ``lock_timeout`` seconds, held by a stuck or foreign process)
leaves that process with its own per-process budget, after one warning. A state in the file that
no bucket of ours writes (infinite or far-future times, a rate out of range) is read as no file
(:meth:`~._limiter.TokenBucket._load`). Several hosts (or users) each have their budget: their sum may exceed the tier,
and the 429s settle the rest (every submitter sharing a file backs off together, AIMD).

:func:`submission_limiter` gives each process one bucket per account and rate, on that file.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Protocol

from airflow_provider_wavespeed.api._limiter import BucketState, MemoryStore, StateCell, TokenBucket

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX (Windows): per-process budgets
    fcntl = None

_log = logging.getLogger(__name__)

BUDGET_DIR_ENV = "WAVESPEED_BUDGET_DIR"
# version, tat, paused_until, rate, grow_at, written_at: little-endian doubles.
_RECORD = struct.Struct("<6d")
_VERSION = 1.0
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _encode(state: BucketState) -> bytes:
    return _RECORD.pack(_VERSION, state.tat, state.paused_until, state.rate, state.grow_at, state.written_at)


def _decode(data: bytes) -> BucketState | None:
    """Return the stored state; None for a new, short or foreign file (the bucket starts afresh)."""
    if len(data) != _RECORD.size:
        return None
    version, tat, paused_until, rate, grow_at, written_at = _RECORD.unpack(data)
    if version != _VERSION:
        return None
    return BucketState(tat, paused_until, rate, grow_at, written_at)


class FileBucketStore:
    """A bucket state in a file shared by every process that opens it; wall-clock times.

    When its lock cannot be taken within ``lock_timeout`` seconds, the store keeps the state in this
    process's memory from then on (per-process pacing), after one warning.
    """

    shared = True
    #: Seconds to wait for the file's lock; a real holder keeps it for microseconds.
    lock_timeout = 5.0

    def __init__(self, path: str) -> None:
        if fcntl is None:
            raise OSError("fcntl.flock is not available on this platform")
        self.path = path
        self._lock = threading.Lock()
        self._fd, self._pid = self._open(), os.getpid()
        self._own: MemoryStore | None = None  # set once the file's lock could not be taken

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o600)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{self.path} is not a regular file")
        return fd

    def _reopen_after_fork(self) -> None:
        # A forked child inherits the descriptor, and with it the parent's lock (flock locks
        # belong to the open file): it needs its own, or parent and child would not exclude
        # each other. Its own thread lock too: another thread may have held the parent's.
        inherited = self._fd
        self._lock = threading.Lock()
        self._fd, self._pid = self._open(), os.getpid()
        os.close(inherited)  # drops the child's reference only; the parent's lock is untouched

    @contextmanager
    def locked(self) -> Iterator[StateCell]:
        assert fcntl is not None
        if self._pid != os.getpid():
            self._reopen_after_fork()
        # Threads of one process share the descriptor, and flock does not exclude them: the
        # thread lock does; flock excludes the other processes (and other stores of this one).
        with self._lock:
            fd = self._fd
            if self._own is None and not self._flock(fd):
                self._own = MemoryStore()
                _warn_once(
                    f"lock:{self.path}",
                    "WaveSpeed submission budget: the lock of %s was not free within %g s (a stuck or "
                    "foreign process holds it); this process paces its submissions on its own from now on",
                    self.path,
                    self.lock_timeout,
                )
            if self._own is not None:
                with self._own.locked() as cell:
                    yield cell
                return
            try:
                state = _decode(os.pread(fd, _RECORD.size, 0))
                cell = StateCell(state)
                yield cell
                if cell.state is not None and cell.state is not state:
                    self._write(fd, cell.state)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _flock(self, fd: int) -> bool:
        """Take the file's lock, waiting at most ``lock_timeout`` seconds; False if it stayed taken."""
        assert fcntl is not None
        deadline = time.monotonic() + self.lock_timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(pause)
                pause = min(pause * 2, 0.05)

    def _write(self, fd: int, state: BucketState) -> None:
        try:
            os.pwrite(fd, _encode(state), 0)
        except OSError as exc:  # a full disk: submits go on, paced as if this one had not happened
            _warn_once(f"write:{self.path}", "WaveSpeed submission budget: cannot write %s (%s)", self.path, exc)


def budget_dir() -> str:
    """Return the directory of the budget files: ``$WAVESPEED_BUDGET_DIR``, else one per user in the temp dir."""
    chosen = os.environ.get(BUDGET_DIR_ENV, "").strip()
    if chosen:
        return chosen
    return os.path.join(tempfile.gettempdir(), f"wavespeed-budget-{os.getuid()}")


def budget_file_name(base_url: str, api_key: str, per_minute: float) -> str:
    """Return the file name of one account's budget: hashes only (never the key)."""
    key_hash = hashlib.sha256(api_key.encode()).hexdigest()
    return hashlib.sha256(f"{base_url}\n{key_hash}\n{per_minute!r}".encode()).hexdigest()[:32] + ".budget"


def _checked_dir() -> str:
    directory = budget_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    # The default lives in a world-writable temp dir: anyone could have made it first. A chosen one
    # gets the same checks: a process that can write there can stall or speed up every submit.
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise OSError(
            f"{directory} is not a directory of this user's that only it can write "
            f"(owner uid {info.st_uid}, mode {stat.filemode(info.st_mode)})"
        )
    return directory


def _warn_once(reason: str, message: str, *args: object) -> None:
    with _warned_lock:
        if reason in _warned:
            return
        _warned.add(reason)
    _log.warning(message, *args)


def shared_store(base_url: str, api_key: str, per_minute: float) -> FileBucketStore | None:
    """Return the host-wide store of this account's submission budget; None (after one warning): per-process."""
    if fcntl is None:
        _warn_once("fcntl", "No fcntl.flock here: each process paces WaveSpeed submissions on its own")
        return None
    try:
        return FileBucketStore(os.path.join(_checked_dir(), budget_file_name(base_url, api_key, per_minute)))
    except OSError as exc:
        _warn_once(
            f"dir:{budget_dir()}",
            "WaveSpeed submission budget: cannot use a shared file in %s (%s); this process paces its "
            "submissions on its own, and the account's 429s slow it down when processes together "
            "exceed the tier. Set %s to a directory this user owns to share one budget.",
            budget_dir(),
            exc,
            BUDGET_DIR_ENV,
        )
        return None


# One submission budget per account and host: every hook, client, thread and process that submits
# with the same key, base URL and rate draws from it (the tier counts starts per account). Its state
# is a file every process on the host shares (a FileBucketStore; per-process where it cannot be).
# Several hosts each have theirs: the 429s then settle the rest, every process of a host backing off
# together (a 429 pauses and cuts the shared budget).
# The tier counts starts in any 60 s as the server sees them, so the budget paces them evenly over a
# minute one second longer: the first submit's connection set-up can make it arrive later than the
# next ones, and an early 429 would cost more than 1/61 of the rate (a 429 halves the budget for
# about 40 s). A new budget starts with no burst credit.
SUBMISSION_MINUTE = 61.0
_SUBMIT_LIMITERS: dict[tuple[str, str, float], TokenBucket] = {}
_SUBMIT_LIMITERS_LOCK = threading.Lock()


def submission_burst(per_minute: float) -> int:
    """Submissions that may catch up at once after a short lull (a batch writing its record).

    Paced at ``per_minute / 61`` a second, the most slots in any 60 s are ``60 * per_minute / 61 + burst``:
    a burst of half the slack (``per_minute / 122``) keeps that under ``per_minute`` with the other half
    left for arrival jitter. Gold 24, Silver 4, Bronze 1.
    """
    return max(1, math.floor(per_minute / (2 * SUBMISSION_MINUTE)))


class Account(Protocol):
    """What the submission budget needs to know of an account (the hook's ``WaveSpeedCredentials``)."""

    @property
    def api_key(self) -> str: ...
    @property
    def base_url(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def max_submissions_per_minute(self) -> float | None: ...


def submission_limiter(creds: Account) -> TokenBucket | None:
    """Return the limiter for submissions with these credentials (None: no budget), shared on this host.

    One object per connection and process; connections of the same account share its file.
    """
    per_minute = creds.max_submissions_per_minute
    if not per_minute:
        return None
    key = (creds.source, creds.base_url, per_minute)
    with _SUBMIT_LIMITERS_LOCK:
        limiter = _SUBMIT_LIMITERS.get(key)
        if limiter is None:
            limiter = _SUBMIT_LIMITERS[key] = TokenBucket(
                per_minute / SUBMISSION_MINUTE,
                burst=submission_burst(per_minute),
                store=shared_store(creds.base_url, creds.api_key, per_minute),
                start_full=False,
            )
        return limiter
