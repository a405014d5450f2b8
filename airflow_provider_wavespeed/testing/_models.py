"""What the emulator knows about models: a catalog of WaveSpeed model ids, their input rules, prices and kinds.

The catalog holds the models the provider's examples, README, tests and benchmarks use and a few
popular ones, each with the inputs WaveSpeed's documentation marks as required (the source is noted
per entry). Like the API, the emulator refuses an id it does not know (404 "Model not found");
``allow_any_model`` accepts every well-formed id with any inputs, and ``register_model`` adds one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

FLUX_DEV = "wavespeed-ai/flux-dev"
WAN_T2V = "wavespeed-ai/wan-2.1/t2v-480p"
WAN_I2V = "wavespeed-ai/wan-2.1/i2v-480p"
FLUX_KONTEXT = "wavespeed-ai/flux-kontext-dev"
WAN_T2V_720P = "wavespeed-ai/wan-2.1/t2v-720p"

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


KINDS = frozenset({"text-to-image", "image-to-image", "text-to-video", "image-to-video"})


class ModelSpec:
    """Input rules of one known model; ``required`` fields must be present and not empty.

    ``kind`` is one of :data:`KINDS`; its last word says which per-minute limit of the account tier
    a start counts against (images or videos). ``source`` says where the entry comes from.
    """

    def __init__(
        self, kind: str, rules: Mapping[str, Rule], required: tuple[str, ...], source: str = "registered"
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        self.kind = kind
        self.rules = rules
        self.required = required
        self.source = source

    @property
    def media(self) -> str:
        """``image`` or ``video``: what the model makes, and which tier counter its starts use."""
        return "video" if self.kind.endswith("video") else "image"


def _string_list(most: int) -> Rule:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return "must be a list of URLs"
        if not 1 <= len(value) <= most:
            return f"must hold 1 to {most} URLs, got {len(value)}"
        return None

    return check


def _unit_interval(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        return f"must be a number between 0 and 1, got {value!r}"
    return None


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
_SEEDREAM_V4: dict[str, Rule] = {**_COMMON, "prompt": _string, "size": _size(1, 4096)}
_API_NOTES = "../shared/wavespeed-api.md (Representative models)"
_DOCS = "https://wavespeed.ai/docs/docs-api/"

# Every id here is sourced: the API notes the provider is built on, or WaveSpeed's model page.
CATALOG: dict[str, ModelSpec] = {
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
        _API_NOTES,
    ),
    WAN_T2V: ModelSpec("text-to-video", _WAN, ("prompt",), _API_NOTES),
    WAN_I2V: ModelSpec("image-to-video", {**_WAN, "image": _string}, ("prompt", "image"), _API_NOTES),
    FLUX_KONTEXT: ModelSpec(
        "image-to-image",
        {**_COMMON, "prompt": _string, "image": _string, "guidance_scale": _number},
        ("prompt", "image"),
        _API_NOTES,
    ),
    # Wan 2.1 text to video at 720p: the 480p model's inputs with the 720p sizes (model page wan-t2v-720p).
    WAN_T2V_720P: ModelSpec(
        "text-to-video", {**_WAN, "size": _one_of("1280*720", "720*1280")}, ("prompt",), f"{_DOCS}wan-t2v-720p"
    ),
    "wavespeed-ai/flux-schnell": ModelSpec(
        "text-to-image",
        {
            **_COMMON,
            "prompt": _string,
            "image": _string,
            "mask_image": _string,
            "strength": _unit_interval,
            "size": _size(1, 4096),
            "num_images": _integer(1, 4),
            "output_format": _one_of("jpeg", "png", "webp"),
            "enable_safety_checker": _boolean,
        },
        ("prompt",),
        f"{_DOCS}wavespeed-ai/flux-schnell",
    ),
    "bytedance/seedream-v3": ModelSpec(
        "text-to-image",
        {**_COMMON, "prompt": _string, "size": _size(512, 2048), "guidance_scale": _number},
        ("prompt",),
        f"{_DOCS}bytedance-seedream-v3",
    ),
    "bytedance/seedream-v4": ModelSpec(
        "text-to-image", _SEEDREAM_V4, ("prompt",), f"{_DOCS}bytedance/bytedance-seedream-v4"
    ),
    # The API notes' example of a deeper id; its page: the images to edit (up to 10), at most 4096*4096.
    "bytedance/seedream-v4/edit": ModelSpec(
        "image-to-image",
        {**_SEEDREAM_V4, "images": _string_list(10)},
        ("prompt", "images"),
        f"{_DOCS}bytedance/bytedance-seedream-v4-edit",
    ),
    "wavespeed-ai/wan-2.2/image-to-video": ModelSpec(
        "image-to-video",
        {
            **_COMMON,
            "image": _string,
            "prompt": _string,
            "negative_prompt": _string,
            "last_image": _string,
            "size": _one_of("832*480", "1280*720"),
            "duration": _one_of(5, 8),
        },
        ("image", "prompt"),
        f"{_DOCS}wavespeed-ai/wan-2.2-image-to-video",
    ),
}


def registered_spec(kind: str = "text-to-image", required: tuple[str, ...] | list[str] = ()) -> ModelSpec:
    """Make the spec of a model added with ``register_model``: its kind and required inputs, nothing else checked."""
    names = tuple(required)
    if not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"required must be a list of input names, got {required!r}")
    return ModelSpec(kind, {}, names)


def check_model_id(model: str) -> tuple[int, str] | None:
    """(HTTP status, message) when ``model`` cannot be a model id, else None."""
    if not _MODEL_ID.fullmatch(model) or ".." in model:
        return 400, f"Invalid model id {model!r}"
    if model.split("/", 1)[0] in _RESERVED:
        return 404, f"Model not found: {model}"
    return None


def unknown_model(model: str) -> tuple[int, str]:
    """Return what the API answers a submit or price of a model id it does not have."""
    return 404, f"Model not found: {model}"


def validate_inputs(spec: ModelSpec | None, inputs: Mapping[str, Any]) -> str | None:
    """Return the API-style message for the first invalid input, or None when valid (always for no spec)."""
    if spec is None:
        return None
    for name in spec.required:
        value = inputs.get(name)
        if value is None or value == "" or value == []:
            return f"Invalid request parameters: {name} is required"
    for name, value in inputs.items():
        rule = spec.rules.get(name)
        problem = rule(value) if rule is not None else None
        if problem is not None:
            return f"Invalid request parameters: {name} {problem}"
    return None


def is_video(model: str, spec: ModelSpec | None = None) -> bool:
    """Tell whether a model makes videos: by its kind when known, else by name (``t2v``/``i2v``/``video``)."""
    if spec is not None:
        return spec.media == "video"
    return any(marker in model for marker in _VIDEO_MARKERS)


def output_spec(model: str, inputs: Mapping[str, Any], spec: ModelSpec | None = None) -> tuple[int, str]:
    """Return (number of outputs, file extension) a completed prediction will have."""
    if is_video(model, spec):
        return 1, "mp4"
    rules = spec.rules if spec is not None else {}
    count, ext = 1, "png"
    if "num_images" in rules and isinstance(inputs.get("num_images"), int):
        count = inputs["num_images"]
    if "output_format" in rules:
        given = inputs.get("output_format", "jpeg")
        ext = given if given in ("jpeg", "png", "webp") else "jpeg"
    return count, ext


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


def model_list(models: Mapping[str, ModelSpec], overrides: Mapping[str, float]) -> list[dict[str, Any]]:
    """Return the ``GET /models`` payload: the known models, their inputs and base price."""
    return [
        {
            "model_id": model_id,
            "name": model_id.rsplit("/", 1)[-1],
            "type": spec.kind,
            "base_price": price(model_id, {}, overrides),
            "inputs": sorted(spec.rules),
            "required": list(spec.required),
        }
        for model_id, spec in models.items()
    ]
