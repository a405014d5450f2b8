"""Bad input is refused before any request, with a message naming the value and the rule."""

from __future__ import annotations

import math

import pytest

from airflow_provider_wavespeed.api import WaveSpeedClient, WaveSpeedConfigError, WaveSpeedValidationError
from airflow_provider_wavespeed.api._validation import (
    MAX_INPUT_DEPTH,
    validate_base_url,
    validate_inputs,
    validate_model,
    validate_prediction_id,
)

GOOD_MODELS = ["wavespeed-ai/flux-dev", "wavespeed-ai/wan-2.1/t2v-480p", "bytedance/seedream-v4/edit", "a/b_c.d"]
BAD_MODELS = [
    "flux-dev",  # no owner
    "/wavespeed-ai/flux-dev",  # leading slash
    "wavespeed-ai/../balance",  # path traversal
    "wavespeed-ai/flux..dev",
    "wavespeed-ai/flux-dev?webhook=x",
    "wavespeed-ai/flux-dev#x",
    "wavespeed-ai/flux%2Fdev",
    "wavespeed-ai/flux dev",
    "wavespeed-ai/flux-dev/",
    "wavespeed-ai//flux-dev",
    "wavespeed-ai/.hidden",
    "",
    None,
    42,
]


@pytest.mark.parametrize("model", GOOD_MODELS)
def test_model_ids_of_any_depth_are_accepted(model: str) -> None:
    assert validate_model(model) == model


@pytest.mark.parametrize("model", BAD_MODELS)
def test_malformed_model_ids_are_refused(model: object) -> None:
    with pytest.raises(WaveSpeedValidationError) as info:
        validate_model(model)
    assert repr(model) in str(info.value) or type(model).__name__ in str(info.value)


@pytest.mark.parametrize("prediction_id", ["../balance", "abc/def", "abc?x=1", "a b", "", "x" * 129, None, "%2e%2e"])
def test_prediction_ids_with_path_characters_are_refused(prediction_id: object) -> None:
    with pytest.raises(WaveSpeedValidationError, match="invalid prediction id"):
        validate_prediction_id(prediction_id)


def test_hex_prediction_ids_are_accepted() -> None:
    assert validate_prediction_id("0123456789abcdef0123456789abcdef") == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        (["prompt"], "must be a dict"),
        (None, "must be a dict"),
        ("not json", "JSON object string"),
        ({"prompt": object()}, "not JSON"),
        ({"seed": math.nan}, "NaN"),
        ({1: "x"}, "non-string key"),
        ({"nested": {"deep": [1, {2, 3}]}}, "inputs['nested']['deep'][1]"),
    ],
)
def test_inputs_that_are_not_a_json_mapping_are_refused(inputs: object, needle: str) -> None:
    with pytest.raises(WaveSpeedValidationError) as info:
        validate_inputs(inputs)
    assert needle in str(info.value)


def test_inputs_as_a_json_object_string_are_parsed() -> None:
    assert validate_inputs('{"prompt": "cat", "seed": 1}') == {"prompt": "cat", "seed": 1}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.wavespeed.ai", "https://api.wavespeed.ai"),
        ("https://api.wavespeed.ai/", "https://api.wavespeed.ai"),
        ("https://api.wavespeed.ai/api/v3", "https://api.wavespeed.ai"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://localhost:8765/", "http://localhost:8765"),
        ("http://[::1]:8765", "http://[::1]:8765"),
        ("https://proxy.example.com/wavespeed", "https://proxy.example.com/wavespeed"),
    ],
)
def test_base_urls_are_normalised(url: str, expected: str) -> None:
    assert validate_base_url(url) == expected


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://api.wavespeed.ai", "clear text"),
        ("http://10.1.2.3:8765", "clear text"),
        ("ftp://api.wavespeed.ai", "not an http(s) URL"),
        ("api.wavespeed.ai", "not an http(s) URL"),
        ("https://user:pw@api.wavespeed.ai", "must not carry credentials"),
        ("https://api.wavespeed.ai/?x=1", "query"),
    ],
)
def test_unsafe_base_urls_are_refused(url: str, needle: str) -> None:
    with pytest.raises(WaveSpeedConfigError) as info:
        validate_base_url(url)
    assert needle in str(info.value)


def test_client_refuses_plain_http_to_remote_host_so_the_key_never_travels_in_clear() -> None:
    with pytest.raises(WaveSpeedConfigError, match="clear text"):
        WaveSpeedClient("secret-key", "http://api.wavespeed.ai")


def _nested(depth: int) -> dict[str, object]:
    inputs: dict[str, object] = {"prompt": "cat"}
    inner: object = 1
    for level in range(depth):
        inner = [inner] if level % 2 else {"x": inner}
    inputs["deep"] = inner
    return inputs


def _cyclic_dict() -> dict[str, object]:
    inputs: dict[str, object] = {"prompt": "cat"}
    inputs["self"] = {"again": inputs}
    return inputs


def _cyclic_list() -> dict[str, object]:
    loop: list[object] = []
    loop.append(loop)
    return {"prompt": "cat", "images": loop}


@pytest.mark.parametrize(
    "inputs",
    [_nested(100_000), _cyclic_dict(), _cyclic_list(), _nested(64)],
    ids=["deep", "cyclic dict", "cyclic list", "one level too deep"],
)
def test_nested_or_cyclic_inputs_are_refused_without_recursion(inputs: object) -> None:
    with pytest.raises(WaveSpeedValidationError, match=f"nested deeper than {MAX_INPUT_DEPTH} levels"):
        validate_inputs(inputs)


def test_inputs_nested_up_to_the_limit_are_accepted() -> None:
    inputs = _nested(MAX_INPUT_DEPTH - 1)
    assert validate_inputs(inputs) == inputs


def test_a_json_string_nested_past_the_parser_is_refused() -> None:
    with pytest.raises(WaveSpeedValidationError, match="JSON object string"):
        validate_inputs("[" * 200_000 + "]" * 200_000)
