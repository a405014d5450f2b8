"""What the emulator knows about models: input rules, prices and output kinds.

Only the representative models of the API notes are checked; any other model id
is accepted with any inputs, like a catalogue the emulator has not heard of.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

FLUX_DEV = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"
WAN_I2V = "wavespeed-ai/wan-2.1/i2v-480p"
FLUX_KONTEXT = "wavespeed-ai/flux-kontext-dev"

# The emulator's own prices (not WaveSpeed's): per image, per 5 s of video at 480p; each input the
# API's pricing pages name as a price factor changes them (num_images; duration and resolution).
DEFAULT_PRICE = 0.01
FLUX_DEV_PRICE_PER_IMAGE = 0.003
WAN_PRICE_PER_5_SECONDS = 0.3
# A video's price per resolution, from the ``resolution`` input or the model id (``t2v-720p``).
RESOLUTION_FACTOR = {"480p": 1.0, "720p": 2.0, "1080p": 4.0}

# Path segments like "wan-2.1" or "seedream-v4"; no empty, dot-only or odd segments.
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)+")
# First segments that belong to the API's own routes, never to a model.
_RESERVED = frozenset({"predictions", "media", "model", "models", "balance"})
_VIDEO_MARKERS = ("t2v", "i2v", "video")

# A rule checks one present value and returns the problem, or None when fine.
Rule = Callable[[Any], "str | None"]


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be a boolean"


def _number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if ok else "must be a number"


def _integer(low: int | None = None, high: int | None = None) -> Rule:
    def check(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return "must be an integer"
        if (low is not None and value < low) or (high is not None and value > high):
            return f"must be between {low} and {high}, got {value}"
        return None

    return check


def _one_of(*choices: Any) -> Rule:
    def check(value: Any) -> str | None:
        # bool is an int, so True must not pass for 1.
        if isinstance(value, bool) or value not in choices:
            listed = ", ".join(repr(choice) for choice in choices)
            return f"must be one of {listed}, got {value!r}"
        return None

    return check


def _size(low: int, high: int) -> Rule:
    def check(value: Any) -> str | None:
        match = re.fullmatch(r"(\d+)\*(\d+)", value) if isinstance(value, str) else None
        if match is None or not all(low <= int(side) <= high for side in match.groups()):
            return f"must be 'W*H' with each side between {low} and {high}, got {value!r}"
        return None

    return check


class ModelSpec:
    """Input rules of one known model; ``required`` fields must be present."""

    def __init__(self, kind: str, rules: Mapping[str, Rule], required: tuple[str, ...]) -> None:
        self.kind = kind
        self.rules = rules
        self.required = required


_COMMON: dict[str, Rule] = {
    "enable_base64_output": _boolean,
    "enable_sync_mode": _boolean,
    "seed": _integer(-1, 2**32),
}
_WAN: dict[str, Rule] = {
    **_COMMON,
    "prompt": _string,
    "negative_prompt": _string,
    "size": _one_of("832*480", "480*832"),
    "duration": _one_of(5, 10),
    "num_inference_steps": _integer(1, 50),
}

KNOWN_MODELS: dict[str, ModelSpec] = {
    FLUX_DEV: ModelSpec(
        "text-to-image",
        {
            **_COMMON,
            "prompt": _string,
            "size": _size(512, 1536),
            "num_inference_steps": _integer(1, 50),
            "guidance_scale": _number,
            "num_images": _integer(1, 4),
            "output_format": _one_of("jpeg", "png"),
            "enable_safety_checker": _boolean,
        },
        ("prompt",),
    ),
    WAN_T2V: ModelSpec("text-to-video", _WAN, ("prompt",)),
    WAN_I2V: ModelSpec("image-to-video", {**_WAN, "image": _string}, ("prompt", "image")),
    FLUX_KONTEXT: ModelSpec(
        "image-to-image",
        {**_COMMON, "prompt": _string, "image": _string, "guidance_scale": _number},
        ("prompt", "image"),
    ),
}


def check_model_id(model: str) -> tuple[int, str] | None:
    """(HTTP status, message) when ``model`` cannot be a model id, else None."""
    if not _MODEL_ID.fullmatch(model) or ".." in model:
        return 400, f"Invalid model id {model!r}"
    if model.split("/", 1)[0] in _RESERVED:
        return 404, f"Model not found: {model}"
    return None


def validate_inputs(model: str, inputs: Mapping[str, Any]) -> str | None:
    """The API-style message for the first invalid input, or None when valid."""
    spec = KNOWN_MODELS.get(model)
    if spec is None:
        return None
    for name in spec.required:
        value = inputs.get(name)
        if value is None or value == "":
            return f"Invalid request parameters: {name} is required"
    for name, value in inputs.items():
        rule = spec.rules.get(name)
        problem = rule(value) if rule is not None else None
        if problem is not None:
            return f"Invalid request parameters: {name} {problem}"
    return None


def is_video(model: str) -> bool:
    """Video models are recognised by name, as the outputs are what differ."""
    return any(marker in model for marker in _VIDEO_MARKERS)


def output_spec(model: str, inputs: Mapping[str, Any]) -> tuple[int, str]:
    """(number of outputs, file extension) a completed prediction will have."""
    if is_video(model):
        return 1, "mp4"
    if model == FLUX_DEV:
        count = inputs.get("num_images", 1)
        ext = inputs.get("output_format", "jpeg")
        return (count if isinstance(count, int) else 1), (ext if ext in ("jpeg", "png") else "jpeg")
    return 1, "png"


def _resolution(model: str, inputs: Mapping[str, Any]) -> float:
    given = inputs.get("resolution")
    if isinstance(given, str) and given in RESOLUTION_FACTOR:
        return RESOLUTION_FACTOR[given]
    return next((factor for name, factor in RESOLUTION_FACTOR.items() if model.endswith(f"-{name}")), 1.0)


def price(model: str, inputs: Mapping[str, Any], overrides: Mapping[str, float]) -> float:
    """USD cost of one submission; an override is a flat price per submission.

    flux-dev: per image (``num_images``); Wan video: per 5 s of ``duration``, times the
    resolution's factor (:data:`RESOLUTION_FACTOR`). The prompt never changes a price here.
    """
    if model in overrides:
        return overrides[model]
    if model == FLUX_DEV:
        count = inputs.get("num_images", 1)
        return round(FLUX_DEV_PRICE_PER_IMAGE * (count if isinstance(count, int) else 1), 6)
    if model.startswith("wavespeed-ai/wan-") and ("t2v" in model or "i2v" in model):
        seconds = inputs.get("duration", 5)
        seconds = seconds if isinstance(seconds, (int, float)) and seconds > 0 else 5
        return round(WAN_PRICE_PER_5_SECONDS * seconds / 5 * _resolution(model, inputs), 6)
    return DEFAULT_PRICE


def model_list(overrides: Mapping[str, float]) -> list[dict[str, Any]]:
    """The ``GET /models`` payload: the known models, their inputs and base price."""
    return [
        {
            "model_id": model_id,
            "name": model_id.rsplit("/", 1)[-1],
            "type": spec.kind,
            "base_price": price(model_id, {}, overrides),
            "inputs": sorted(spec.rules),
            "required": list(spec.required),
        }
        for model_id, spec in KNOWN_MODELS.items()
    ]
