"""Real (tiny) media bytes and a multipart parser for the emulator.

Everything here is built in code so the emulator needs no data files and no
imaging or multipart libraries.
"""

from __future__ import annotations

import email.message
import email.utils
import hashlib
import struct
import zlib

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "mp4": "video/mp4",
}


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_bytes(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    """A valid ``size``x``size`` PNG filled with one colour."""
    row = b"\x00" + bytes(rgb) * size  # filter byte 0 ("None") + RGB pixels
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * size))
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _build_jpeg() -> bytes:
    """A valid baseline JPEG: one 8x8 mid-grey block.

    With every pixel at 128 the level-shifted block is all zeros, so the only
    symbols needed are "DC category 0" and "AC end-of-block". Each Huffman table
    therefore holds a single 1-bit code ``0``, and the scan is the bits ``00``
    padded with ones: one byte, 0x3F.
    """
    one_code = bytes([1] + [0] * 15)  # one code of length 1
    return b"".join(
        [
            b"\xff\xd8",  # SOI
            _jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            _jpeg_segment(0xDB, b"\x00" + b"\x01" * 64),  # quantisation table 0, all ones
            _jpeg_segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00"),
            _jpeg_segment(0xC4, b"\x00" + one_code + b"\x00"),  # DC table 0
            _jpeg_segment(0xC4, b"\x10" + one_code + b"\x00"),  # AC table 0
            _jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),  # SOS, 1 component
            b"\x3f",
            b"\xff\xd9",  # EOI
        ]
    )


JPEG_BYTES = _build_jpeg()

# ftyp (ISO base media, "isom"/"mp41" brands) then an empty mdat: enough for
# content sniffers and for clients that only check the header.
MP4_BYTES = (
    struct.pack(">I", 24)
    + b"ftypisom"
    + struct.pack(">I", 0x200)
    + b"isommp41"
    + struct.pack(">I", 8)
    + b"free"
    + struct.pack(">I", 8)
    + b"mdat"
)


def output_bytes(prediction_id: str, index: int, ext: str) -> bytes:
    """The bytes of output ``index`` of a prediction; PNGs get a colour per output."""
    if ext == "mp4":
        return MP4_BYTES
    if ext in ("jpeg", "jpg"):
        return JPEG_BYTES
    digest = hashlib.blake2b(f"{prediction_id}:{index}".encode(), digest_size=3).digest()
    return png_bytes((digest[0], digest[1], digest[2]))


def _header_param(value: str, header: str, param: str) -> str | None:
    """Read one parameter (``boundary``, ``name``...) of a MIME header value."""
    message = email.message.Message()
    message[header] = value
    found = message.get_param(param, header=header)
    if found is None:
        return None
    return email.utils.collapse_rfc2231_value(found)


class UploadedPart:
    """One part of a ``multipart/form-data`` body."""

    __slots__ = ("content", "content_type", "filename", "name")

    def __init__(self, name: str, filename: str | None, content_type: str | None, content: bytes):
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.content = content


def parse_multipart(content_type: str, body: bytes) -> dict[str, UploadedPart]:
    """Parse a whole ``multipart/form-data`` body (first part wins per name).

    Raises ValueError for a body that is not multipart. The body is split on the
    raw boundary bytes, so binary file content is returned exactly as sent.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("expected a multipart/form-data body")
    boundary = _header_param(content_type, "content-type", "boundary")
    if not boundary:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    parts: dict[str, UploadedPart] = {}
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):  # closing delimiter
            break
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed multipart part")
        # Each part is framed by CRLF after the delimiter line and CRLF before the next.
        content = content.removesuffix(b"\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = _header_param(disposition, "content-disposition", "name")
        if name is None or name in parts:
            continue
        filename = _header_param(disposition, "content-disposition", "filename")
        parts[name] = UploadedPart(name, filename, headers.get("content-type"), content)
    return parts
