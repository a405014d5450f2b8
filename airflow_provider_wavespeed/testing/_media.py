"""The emulator's output media: drawn images and a tiny playable video.

Images are drawn with Pillow so a person can tell the outputs apart: the requested ``size``
("W*H", as WaveSpeed spells it) in pixels, a pattern derived from the prompt, and the prompt's
text. They are deterministic per prediction id, index and inputs, and cached, because a client
may fetch the same output many times. Every video output is the same one-second H.264 clip
(``emulated.mp4``, 160x90, made once with ffmpeg's test pattern), a file players open.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import re
import textwrap
from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageDraw, ImageFont

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "mp4": "video/mp4",
}
# Sides outside this range are clamped (a WaveSpeed model refuses them before; only a model of
# allow_any_model can ask): the largest documented size is 4096*4096.
MAX_SIDE = 4096
MIN_SIDE = 64
DEFAULT_SIZE = "1024*1024"  # what flux-dev generates when no size is given
_SIZE_RE = re.compile(r"\s*(\d{1,5})\s*[*xX]\s*(\d{1,5})\s*")
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}

VIDEO_FILE = "emulated.mp4"


@functools.cache
def video_bytes() -> bytes:
    """Return the clip every video output serves (package data, read once)."""
    return importlib.resources.files(__package__).joinpath(VIDEO_FILE).read_bytes()


def image_dimensions(size: object) -> tuple[int, int]:
    """Pixel width and height drawn for a ``size`` input such as ``"1280*720"``: the requested ones.

    Sides are kept between ``MIN_SIDE`` and ``MAX_SIDE``; no ``size`` (or an unreadable one) is
    ``DEFAULT_SIZE``.
    """
    match = _SIZE_RE.fullmatch(size) if isinstance(size, str) else None
    width, height = (int(match[1]), int(match[2])) if match else (1024, 1024)
    return min(MAX_SIDE, max(MIN_SIDE, width)), min(MAX_SIDE, max(MIN_SIDE, height))


def _colour(data: bytes, low: int, span: int) -> tuple[int, int, int]:
    return (low + data[0] % span, low + data[1] % span, low + data[2] % span)


@functools.lru_cache(maxsize=64)  # full-size images: tens to hundreds of KiB each
def draw_image(prediction_id: str, index: int, ext: str, prompt: str, size: str) -> bytes:
    """Draw an image in format ``ext``.

    Shapes whose colours and places come from the prompt (the same prompt looks alike), varied per
    prediction and output, with the prompt's text on top and a footer naming the requested size,
    prediction id and output index.
    """
    width, height = image_dimensions(size)
    theme = hashlib.blake2b(prompt.encode(), digest_size=32).digest()
    variant = hashlib.blake2b(f"{prediction_id}:{index}".encode(), digest_size=32).digest()
    image = Image.new("RGB", (width, height), _colour(theme, 30, 110))
    draw = ImageDraw.Draw(image)
    longest = max(width, height)
    for shape in range(6):
        cx, cy = theme[3 + shape] / 255 * width, theme[9 + shape] / 255 * height
        radius = (0.1 + variant[shape] / 255 * 0.35) * longest
        draw.ellipse(
            (cx - radius, cy - radius, cx + radius, cy + radius),
            fill=_colour(theme[15 + shape :] + variant[shape:], 90, 166),
        )
    font_size = max(10, width // 16)
    font = ImageFont.load_default(size=font_size)
    lines = textwrap.wrap(prompt, width=max(8, int(width / (font_size * 0.55)))) or [""]
    if len(lines) > 6:
        lines = [*lines[:5], lines[5][: max(1, len(lines[5]) - 1)] + "…"]
    text = "\n".join(lines)
    spacing = font_size // 4
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=spacing)
    x, y = (width - (right - left)) / 2, (height - (bottom - top)) / 2
    pad = font_size // 2
    draw.rounded_rectangle(
        (x - pad, y - pad, x + right - left + pad, y + bottom - top + pad), radius=pad, fill=(20, 20, 20)
    )
    draw.multiline_text((x - left, y - top), text, font=font, fill=(255, 255, 255), spacing=spacing, align="center")
    small = ImageFont.load_default(size=max(8, width // 36))
    footer = f"emulated {size}  {prediction_id[:8]} #{index}"
    draw.text((pad, height - pad - max(8, width // 36)), footer, font=small, fill=(255, 255, 255))
    buffer = io.BytesIO()
    if ext == "png":  # a palette of 64 colours: a few KiB instead of tens
        image.quantize(64, method=Image.Quantize.FASTOCTREE).save(buffer, "PNG")
    else:
        image.save(buffer, _PIL_FORMATS[ext], quality=85)
    return buffer.getvalue()


def output_bytes(prediction_id: str, index: int, ext: str, inputs: Mapping[str, Any] | None = None) -> bytes:
    """Return the bytes of output ``index`` of a prediction made from ``inputs``.

    Images show the ``prompt`` at the requested ``size``; videos are :func:`video_bytes`.
    """
    if ext == "mp4":
        return video_bytes()
    inputs = inputs or {}
    prompt, size = inputs.get("prompt"), inputs.get("size")
    return draw_image(
        prediction_id,
        index,
        ext if ext in _PIL_FORMATS else "png",
        prompt if isinstance(prompt, str) else "",
        size if isinstance(size, str) and _SIZE_RE.fullmatch(size) else DEFAULT_SIZE,
    )
