"""The emulator's images: the requested size class, the prompt on them, deterministic, served over HTTP."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import pytest
import requests
from PIL import Image

from airflow_provider_wavespeed.testing import WaveSpeedEmulator, _media

FLUX = "wavespeed-ai/flux-dev"


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every pixel: a truncated or corrupt file fails here
    return image


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("1024*1024", (512, 512)),
        ("1280*720", (512, 288)),  # scaled down, aspect ratio kept
        ("720*1280", (288, 512)),
        ("256*384", (256, 384)),  # small requests are drawn at their size
        ("100*4000", (64, 512)),  # no side under MIN_SIDE
        (None, (512, 512)),  # flux-dev's default 1024*1024
        ("not a size", (512, 512)),
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
        image = _image(_media.output_bytes("abc123", 0, "png", {"prompt": prompt})).convert("RGB")
        band = image.crop((0, 200, 512, 312)).tobytes()  # R, G, B bytes per pixel
        return sum(1 for i in range(0, len(band), 3) if min(band[i : i + 3]) > 240)

    assert white_pixels("") == 0
    assert white_pixels("a red fox in fresh snow, golden hour") > 500


def test_videos_stay_minimal_mp4_files() -> None:
    assert _media.output_bytes("abc123", 0, "mp4", {"prompt": "waves"})[4:8] == b"ftyp"


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
    assert [_image(data).size for data in downloads] == [(512, 288), (512, 288)]
    assert downloads[0] != downloads[1]  # one picture per output index
    assert downloads == [_media.output_bytes(done["id"], index, "png", inputs) for index in range(2)]
    inline = _completed(emulator, {**inputs, "enable_base64_output": True})
    decoded = [base64.b64decode(output) for output in inline["outputs"]]
    assert decoded == [_media.output_bytes(inline["id"], index, "png", inputs) for index in range(2)]
