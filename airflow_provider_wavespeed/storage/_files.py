"""Where stored files go and what they are called: local directories and object stores, atomic writes.

Every file is written under a hidden temporary name and moved into place, so a reader never sees
a partial file and a re-run overwrites the same names. Object stores are reached through Airflow's
``ObjectStoragePath`` (any fsspec filesystem).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import mimetypes
import os
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Union
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

from airflow_provider_wavespeed.api.errors import WaveSpeedError, WaveSpeedStorageError

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# Where a file is or goes: a local path, a URL (file://, s3://...) or an ObjectStoragePath.
Location = Union[str, "os.PathLike[str]", "ObjectStoragePath"]
OutputPath = Location  # where outputs are copied (output_path)

# Under the public package's name: the logger users configure.
log = logging.getLogger("airflow_provider_wavespeed.storage")

_LOCAL_PROTOCOLS = frozenset({"", "file", "local"})
_GENERIC_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})
# The names WaveSpeed itself uses (its `output_format` says "jpeg"), ahead of mimetypes' guesses.
_EXTENSIONS = {
    "image/jpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "video/quicktime": "mov",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "model/gltf-binary": "glb",
    "application/json": "json",
    "text/plain": "txt",
}
_EXT_RE = re.compile(r"[a-z0-9]{1,8}")

# -- where the files go ---------------------------------------------------------------


class Destination:
    """A directory that files are written into atomically (temporary name, then a move)."""

    def __init__(self, description: str) -> None:
        self.description = description

    def open_temp(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def commit(self, temp_name: str, final_name: str) -> str:
        """Move ``temp_name`` over ``final_name``; return the stored file's path or URL."""
        raise NotImplementedError

    def discard(self, temp_name: str) -> None:
        raise NotImplementedError


class _LocalDirectory(Destination):
    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.directory = directory

    def prepare(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        _warn_if_shared(self.directory)

    def open_temp(self, name: str) -> IO[bytes]:
        return open(os.path.join(self.directory, name), "wb")  # the caller closes it

    def commit(self, temp_name: str, final_name: str) -> str:
        final = os.path.join(self.directory, final_name)
        os.replace(os.path.join(self.directory, temp_name), final)  # atomic within one filesystem
        return final

    def discard(self, temp_name: str) -> None:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.directory, temp_name))


_WARNED_DIRECTORIES: set[str] = set()


def _warn_if_shared(directory: str) -> None:
    """Warn (once per directory and process) when another user could swap or plant files in ``directory``.

    That is: it or a directory above it belongs to another user (not root), or is writable by group
    or others without the sticky bit (``/tmp`` itself has it; a folder someone else made in it is theirs).
    """
    if directory in _WARNED_DIRECTORIES or not hasattr(os, "geteuid"):
        return
    me = os.geteuid()
    path = os.path.realpath(directory)
    while True:
        try:
            info = os.stat(path)
        except OSError:
            return
        problem = ""
        if info.st_uid not in (me, 0):
            problem = f"belongs to another user (uid {info.st_uid})"
        elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o}, no sticky bit)"
        if problem:
            _WARNED_DIRECTORIES.add(directory)
            log.warning(
                "output_path %s: %s %s, who could replace or read the stored outputs. Use a directory only "
                "this user can write to",
                directory,
                "it" if path == os.path.realpath(directory) else f"the directory {path} above it",
                problem,
            )
            return
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


class _ObjectStore(Destination):
    """Any fsspec filesystem through Airflow's ObjectStoragePath (S3, GCS, Azure, memory...).

    Object stores publish an object only when its upload completes, and ``mv`` there is a
    server-side copy, so the final name is never seen half written. Buckets are not created:
    creating storage is the deployment's decision, not a task's.
    """

    def __init__(self, root: ObjectStoragePath) -> None:
        super().__init__(str(root))
        self.root = root

    def prepare(self) -> None:
        pass

    def open_temp(self, name: str) -> IO[bytes]:
        return (self.root / name).open("wb")

    def commit(self, temp_name: str, final_name: str) -> str:
        temp, final = self.root / temp_name, self.root / final_name
        temp.fs.mv(temp.path, final.path)
        return str(final)

    def discard(self, temp_name: str) -> None:
        temp = self.root / temp_name
        with contextlib.suppress(Exception):
            temp.fs.rm(temp.path)


def _locate(location: Location, what: str) -> str | ObjectStoragePath:
    """Return a local absolute path, or an ObjectStoragePath for anything that is not local.

    Accepts an ``ObjectStoragePath``, a URL string (``file:///data/out/``,
    ``s3://bucket/prefix/``, ``s3://conn_id@bucket/prefix/``) or a local path.
    """
    try:
        from airflow.sdk import ObjectStoragePath
    except ImportError:  # without Airflow's object storage only local paths work
        ObjectStoragePath = None  # type: ignore[assignment,misc]

    if ObjectStoragePath is not None and isinstance(location, ObjectStoragePath):
        if location.protocol in _LOCAL_PROTOCOLS:
            return os.path.abspath(location.path)
        return location
    if isinstance(location, os.PathLike):
        return os.path.abspath(os.fspath(location))
    if not isinstance(location, str) or not location.strip():
        raise WaveSpeedStorageError(
            f"{what} must be a local path, a URL such as 'file:///data/out/' or 's3://bucket/prefix/', "
            f"or an ObjectStoragePath; got {location!r}"
        )
    text = location.strip()
    if "://" not in text:
        return os.path.abspath(os.path.expanduser(text))
    parts = urlsplit(text)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise WaveSpeedStorageError(f"{what} {text!r}: a file:// URL must name a local path (file:///dir/)")
        return os.path.abspath(url2pathname(parts.path))
    if ObjectStoragePath is None:
        raise WaveSpeedStorageError(f"{what} {text!r} needs Airflow's ObjectStoragePath (airflow.sdk)")
    try:
        return ObjectStoragePath(text)
    except Exception as exc:
        raise WaveSpeedStorageError(
            f"cannot use {what} {text!r}: {type(exc).__name__}: {exc}. Object storage needs the "
            "filesystem's package (e.g. s3fs via apache-airflow-providers-amazon, gcsfs via "
            "apache-airflow-providers-google) installed on the workers"
        ) from None


def resolve_output_path(output_path: OutputPath) -> _LocalDirectory | _ObjectStore:
    """Return the destination ``output_path`` names: a local directory or an object-store prefix."""
    location = _locate(output_path, "output_path")
    return _LocalDirectory(location) if isinstance(location, str) else _ObjectStore(location)


# -- what the files are called -----------------------------------------------------------


def output_extension(content_type: str | None, url: str = "") -> str:
    """Return the file extension for a download, from its Content-Type or its URL (``bin`` if neither says).

    The URL's extension wins when the Content-Type agrees with it or says nothing specific
    (``application/octet-stream``), so ``x.jpeg`` served as ``image/jpeg`` stays ``jpeg``.
    """
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    suffix = PurePosixPath(urlsplit(url).path).suffix.lstrip(".").lower() if url else ""
    url_ext = suffix if _EXT_RE.fullmatch(suffix) else ""
    if url_ext and (mime in _GENERIC_TYPES or mimetypes.guess_type(f"x.{url_ext}")[0] == mime):
        return url_ext
    if mime not in _GENERIC_TYPES:
        guessed = _EXTENSIONS.get(mime) or (mimetypes.guess_extension(mime) or "").lstrip(".")
        if _EXT_RE.fullmatch(guessed):
            return guessed
    return url_ext or "bin"


_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"GIF8", "gif"),
    (4, b"ftypqt", "mov"),
    (4, b"ftyp", "mp4"),
    (0, b"\x1a\x45\xdf\xa3", "webm"),
    (0, b"OggS", "ogg"),
    (0, b"fLaC", "flac"),
    (0, b"ID3", "mp3"),
    (0, b"glTF", "glb"),
)


def _sniff_extension(data: bytes) -> str:
    """Return the extension of decoded base64 bytes, from their magic number."""
    if data[:4] == b"RIFF" and data[8:12] in (b"WEBP", b"WAVE"):
        return "webp" if data[8:12] == b"WEBP" else "wav"
    for offset, magic, ext in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return ext
    return "bin"


def decode_inline(output: str, what: str) -> tuple[bytes, str]:
    """Bytes and extension of a base64 output (bare, as the API sends it, or a ``data:`` URL)."""
    mime = ""
    payload = output
    if output.startswith("data:"):
        header, sep, payload = output.partition(",")
        if not sep or not header.endswith(";base64"):
            raise WaveSpeedStorageError(f"{what} is a data: URL that is not base64")
        mime = header[len("data:") : -len(";base64")]
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise WaveSpeedStorageError(f"{what} is neither an http(s) URL nor base64 data: {output[:60]!r}") from None
    ext = output_extension(mime) if mime else "bin"
    return data, ext if ext != "bin" else _sniff_extension(data)


def safe_url(url: str) -> str:
    """Return the URL without query and fragment: signed URLs carry tokens that do not belong in logs."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# -- writing -------------------------------------------------------------------------


def write_file(dest: Destination, temp_name: str, chunks: Iterator[bytes], what: str) -> int:
    """Write ``chunks`` to ``temp_name``; return the byte count. Storage failures become WaveSpeedStorageError."""
    written = 0
    try:
        with dest.open_temp(temp_name) as handle:
            for chunk in chunks:
                handle.write(chunk)
                written += len(chunk)
    except WaveSpeedError:
        raise
    except Exception as exc:  # fsspec backends raise their own types, not only OSError
        raise WaveSpeedStorageError(
            f"{what}: cannot write to {dest.description}: {type(exc).__name__}: {exc}"
        ) from None
    return written


def commit_file(dest: Destination, temp_name: str, final_name: str, what: str) -> str:
    try:
        return dest.commit(temp_name, final_name)
    except Exception as exc:
        raise WaveSpeedStorageError(
            f"{what}: cannot move the file into place as {final_name} in {dest.description}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def write_json(location: Location, value: object, *, what: str) -> str:
    """Write ``value`` as JSON to the file ``location`` (a path, a URL or an ObjectStoragePath), atomically.

    A hidden temporary name, then a move; return where it is, as a string. Raises WaveSpeedStorageError.
    """
    target = _locate(location, what)
    if isinstance(target, str):
        directory, name = os.path.split(target)
        dest: _LocalDirectory | _ObjectStore = _LocalDirectory(directory)
    else:
        dest, name = _ObjectStore(target.parent), target.name
    if not name:
        raise WaveSpeedStorageError(f"{what} {location!r} names a directory; give a file name, e.g. .../manifest.json")
    temp_name = f".{name}.{uuid.uuid4().hex[:12]}.part"
    try:
        dest.prepare()
    except Exception as exc:
        raise WaveSpeedStorageError(f"{what}: cannot create the directory {dest.description}: {exc}") from None
    try:
        write_file(dest, temp_name, iter([json.dumps(value, separators=(",", ":")).encode()]), what)
        return commit_file(dest, temp_name, name, what)
    except BaseException:
        dest.discard(temp_name)
        raise


@contextlib.contextmanager
def open_source(source: Location) -> Iterator[tuple[str | IO[bytes], str]]:
    """Yield what to upload for ``source`` and its file name: a local path as is, or an open object-store file."""
    location = _locate(source, "path")
    if isinstance(location, str):
        yield location, os.path.basename(location)
        return
    try:
        handle = location.open("rb")
    except Exception as exc:
        raise WaveSpeedStorageError(f"cannot open {location}: {type(exc).__name__}: {exc}") from None
    with handle:
        yield handle, location.name
