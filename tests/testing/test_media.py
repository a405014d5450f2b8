"""The emulator's media, served over HTTP.

Images at the requested size with the prompt on them, deterministic; videos a real playable clip.
"""

from __future__ import annotations

import ast
import base64
import fnmatch
import io
import json
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from airflow_provider_wavespeed.testing import WaveSpeedEmulator, _media

FLUX = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every pixel: a truncated or corrupt file fails here
    return image


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024*1024", (1024, 1024)),
        ("1280*720", (1280, 720)),  # "W*H", as WaveSpeed spells a size: width first
        ("720*1280", (720, 1280)),
        ("256*384", (256, 384)),
        ("100*4000", (100, 4000)),
        ("32*5000", (64, 4096)),  # clamped to MIN_SIDE..MAX_SIDE
        (None, (1024, 1024)),  # flux-dev's default 1024*1024
        ("not a size", (1024, 1024)),
    ],
)
def test_images_have_the_requested_shape(size: str | None, expected: tuple[int, int]) -> None:
    inputs: dict[str, Any] = {"prompt": "a lighthouse"} if size is None else {"prompt": "a lighthouse", "size": size}
    for ext, format_name in (("png", "PNG"), ("jpeg", "JPEG")):
        image = _image(_media.output_bytes("abc123", 0, ext, inputs))
        assert (image.format, image.size) == (format_name, expected)


def test_images_are_deterministic_and_tell_prompts_and_outputs_apart() -> None:
    fox = {"prompt": "a red fox in snow", "size": "1024*1024"}
    first = _media.output_bytes("abc123", 0, "png", fox)
    _media.draw_image.cache_clear()
    assert _media.output_bytes("abc123", 0, "png", dict(fox)) == first  # drawn again: the same bytes
    others = [
        _media.output_bytes("abc123", 0, "png", {**fox, "prompt": "a blue whale"}),
        _media.output_bytes("abc123", 1, "png", fox),
        _media.output_bytes("def456", 0, "png", fox),
    ]
    assert len({first, *others}) == 4


def test_the_prompt_is_drawn_on_the_image() -> None:
    # The text panel is dark grey with white letters: a prompt's text leaves many white pixels
    # in the middle band, an empty prompt leaves none there.
    def white_pixels(prompt: str) -> int:
        inputs = {"prompt": prompt, "size": "512*512"}
        image = _image(_media.output_bytes("abc123", 0, "png", inputs)).convert("RGB")
        band = image.crop((0, 200, 512, 312)).tobytes()  # R, G, B bytes per pixel
        return sum(1 for i in range(0, len(band), 3) if min(band[i : i + 3]) > 240)

    assert white_pixels("") == 0
    assert white_pixels("a red fox in fresh snow, golden hour") > 500


def _boxes(data: bytes) -> dict[str, bytes]:
    """Split one level of ISO BMFF boxes: {type: payload} (the last of a repeated type)."""
    boxes, offset = {}, 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        assert 8 <= size <= len(data) - offset, f"box {kind!r} of {size} bytes at {offset} overruns the file"
        boxes[kind.decode("latin-1")] = data[offset + 8 : offset + size]
        offset += size
    return boxes


def test_videos_are_a_real_tiny_h264_clip() -> None:
    video = _media.output_bytes("abc123", 0, "mp4", {"prompt": "waves"})
    assert 1_000 < len(video) < 20_000  # a real clip, and tiny
    top = _boxes(video)
    assert {"ftyp", "moov", "mdat"} <= set(top) and len(top["mdat"]) > 1_000  # coded frames, not an empty box
    stbl = _boxes(_boxes(_boxes(_boxes(_boxes(top["moov"])["trak"])["mdia"])["minf"])["stbl"])
    assert b"avc1" in stbl["stsd"]  # H.264, which every player opens
    frames = struct.unpack(">I", stbl["stsz"][8:12])[0]  # version/flags, sample size, then the count
    assert frames > 1


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (ffmpeg) not installed: the box test above")
def test_videos_play_for_ffprobe(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(_media.output_bytes("abc123", 0, "mp4", {"prompt": "waves"}))
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(clip)],
        capture_output=True,
        text=True,
        check=True,
    )
    (stream,) = json.loads(probe.stdout)["streams"]
    assert stream["codec_name"] == "h264" and (stream["width"], stream["height"]) == (160, 90)
    assert int(stream["nb_read_frames"]) > 1 and float(stream["duration"]) > 0
    assert probe.stderr == ""  # decoded every frame without a complaint


def test_the_clip_ships_as_package_data() -> None:
    # pyproject's [tool.setuptools.package-data] line for the package (tomllib is 3.11+; 3.10 is supported).
    section = (REPO_ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1]
    line = re.search(r"^airflow_provider_wavespeed = (\[.*\])$", section, re.MULTILINE)
    assert line, "pyproject.toml lists no package data for airflow_provider_wavespeed"
    shipped = ast.literal_eval(line.group(1))
    assert any(fnmatch.fnmatch(f"testing/{_media.VIDEO_FILE}", pattern) for pattern in shipped), shipped
    assert (REPO_ROOT / "airflow_provider_wavespeed" / "testing" / _media.VIDEO_FILE).is_file()


def _completed(emulator: WaveSpeedEmulator, inputs: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    submitted = requests.post(f"{emulator.url}/api/v3/{FLUX}", json=inputs, headers=headers, timeout=10)
    prediction_id = submitted.json()["data"]["id"]
    deadline = time.monotonic() + 60  # a bound for a stuck emulator, not a speed assumption
    while time.monotonic() < deadline:
        data: dict[str, Any] = requests.get(
            f"{emulator.url}/api/v3/predictions/{prediction_id}/result", headers=headers, timeout=10
        ).json()["data"]
        if data["status"] == "completed":
            return data
        time.sleep(0.1)
    raise AssertionError(f"prediction {prediction_id} did not complete")


def test_downloads_and_base64_outputs_are_the_same_drawn_image(emulator: WaveSpeedEmulator) -> None:
    inputs = {"prompt": "a paper-craft whale", "size": "1280*720", "output_format": "png", "num_images": 2}
    done = _completed(emulator, inputs)
    downloads = [requests.get(url, timeout=10).content for url in done["outputs"]]
    assert [_image(data).size for data in downloads] == [(1280, 720), (1280, 720)]
    assert downloads[0] != downloads[1]  # one picture per output index
    assert downloads == [_media.output_bytes(done["id"], index, "png", inputs) for index in range(2)]
    inline = _completed(emulator, {**inputs, "enable_base64_output": True})
    decoded = [base64.b64decode(output) for output in inline["outputs"]]
    assert decoded == [_media.output_bytes(inline["id"], index, "png", inputs) for index in range(2)]
