"""WaveSpeedSubmitOperator in real Airflow runs (dag.test()) against the emulator."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow_helpers import AIRFLOW_3_0, dag_test, dag_xcoms, task_output, ti_states

from airflow_provider_wavespeed.links import WaveSpeedModelLink
from airflow_provider_wavespeed.operators.wavespeed import WaveSpeedSubmitOperator
from airflow_provider_wavespeed.testing import WaveSpeedEmulator

FLUX = "wavespeed-ai/flux-dev"
pytestmark = pytest.mark.usefixtures("airflow_db")


# -- running a DAG built in a test ------------------------------------------------------------


def _dag(request: pytest.FixtureRequest, **kwargs: Any) -> DAG:
    dag_id = re.sub(r"[^A-Za-z0-9_]+", "_", f"operator_{request.node.name}")
    return DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, **kwargs)


# -- submitting ---------------------------------------------------------------------------------


def test_submit_only_returns_the_prediction_id(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(task_id="submit", model=FLUX, inputs={"prompt": "a red fox", "num_images": 2})
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    xcoms = dag_xcoms(dag_run)
    [submission] = wavespeed_connection.submissions()
    assert xcoms[("submit", -1, "return_value")] == xcoms[("submit", -1, "prediction_id")] == submission["id"]
    assert submission["model"] == FLUX and submission["inputs"] == {"prompt": "a red fox", "num_images": 2}
    link_key = WaveSpeedModelLink().xcom_key
    assert xcoms[("submit", -1, link_key)] == f"https://wavespeed.ai/models/{FLUX}"
    assert "result" not in wavespeed_connection.counters()["requests"]  # no waiting unless asked


def test_templated_model_and_nested_inputs_render(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    params = {"owner": "acme", "subject": "heron"}
    wavespeed_connection.register_model("acme/painter-v2")  # not a WaveSpeed model: known to this test only
    with _dag(request, params=params) as dag:
        WaveSpeedSubmitOperator(
            task_id="submit",
            model="{{ params.owner }}/painter-v2",
            inputs={
                "prompt": "a {{ params.subject }} at dawn",
                "style": {"palette": ["{{ params.subject }}-grey", "gold"], "strength": 0.5},
                "loras": [{"path": "{{ params.owner }}/{{ dag.dag_id }}", "scale": 1}],
                "seed": 7,
            },
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    [submission] = wavespeed_connection.submissions()
    assert submission["model"] == "acme/painter-v2"
    assert submission["inputs"] == {
        "prompt": "a heron at dawn",
        "style": {"palette": ["heron-grey", "gold"], "strength": 0.5},
        "loras": [{"path": f"acme/{dag.dag_id}", "scale": 1}],
        "seed": 7,
    }
    assert (
        dag_xcoms(dag_run)[("submit", -1, WaveSpeedModelLink().xcom_key)]
        == "https://wavespeed.ai/models/acme/painter-v2"
    )


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
def test_wait_for_completion_returns_the_completed_prediction(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    deferrable: bool,
) -> None:
    wavespeed_connection.set_duration(0.4)
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "a lighthouse", "output_format": "png"},
            wait_for_completion=True,
            deferrable=deferrable,
            poll_interval=0.2,
            timeout=60,
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("generate", -1): "success"}
    xcoms = dag_xcoms(dag_run)
    value = xcoms[("generate", -1, "return_value")]
    [submission] = wavespeed_connection.submissions()
    assert value["id"] == submission["id"] == xcoms[("generate", -1, "prediction_id")]
    assert value["status"] == "completed" and value["model"] == FLUX
    assert len(value["outputs"]) == 1 and value["outputs"][0].endswith(".png")
    assert ("running trigger in line" in caplog.text) is deferrable


# -- dynamic task mapping -------------------------------------------------------------------------


def test_expand_submits_once_per_mapped_task_and_waits_deferred(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    wavespeed_connection.set_duration(0.3)
    prompts = [{"prompt": "a red fox"}, {"prompt": "a paper whale", "seed": 3}, {"prompt": "ramen", "num_images": 2}]
    with _dag(request) as dag:
        WaveSpeedSubmitOperator.partial(
            task_id="generate", model=FLUX, wait_for_completion=True, poll_interval=0.2, timeout=60
        ).expand(inputs=prompts)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("generate", index): "success" for index in range(3)}
    xcoms = dag_xcoms(dag_run)
    by_id = {entry["id"]: entry for entry in wavespeed_connection.submissions()}
    assert len(by_id) == 3  # exactly one submission per mapped task instance
    for index, inputs in enumerate(prompts):
        result = xcoms[("generate", index, "return_value")]
        assert by_id[result["id"]]["inputs"] == inputs and result["status"] == "completed"
        assert len(result["outputs"]) == inputs.get("num_images", 1)


def test_expand_kwargs_submits_once_per_mapped_task(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest
) -> None:
    kwargs_list = [
        {"model": FLUX, "inputs": {"prompt": "a castle"}},
        {"model": "wavespeed-ai/wan-2.1/t2v-480p", "inputs": {"prompt": "waves", "duration": 5}},
        {"model": "acme/upscaler", "inputs": {"image": "https://example.com/a.png", "scale": 2}},
    ]
    wavespeed_connection.register_model("acme/upscaler", kind="image-to-image")  # known to this test only
    with _dag(request) as dag:
        WaveSpeedSubmitOperator.partial(task_id="submit").expand_kwargs(kwargs_list)
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", index): "success" for index in range(3)}
    xcoms = dag_xcoms(dag_run)
    by_id = {entry["id"]: entry for entry in wavespeed_connection.submissions()}
    assert len(by_id) == 3
    for index, kwargs in enumerate(kwargs_list):
        prediction_id = xcoms[("submit", index, "return_value")]
        assert xcoms[("submit", index, "prediction_id")] == prediction_id
        assert {"model": by_id[prediction_id]["model"], "inputs": by_id[prediction_id]["inputs"]} == kwargs


# -- submit failures are never repeated ------------------------------------------------------------


def test_lost_submit_response_is_adopted_from_the_history_never_sent_again(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    """The answer is lost after the prediction was created: it is found in the history (see test_resume.py)."""
    wavespeed_connection.add_fault("submit", "drop_after_submit")
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="submit", model=FLUX, inputs={"prompt": "a paid picture"}, retries=2, retry_delay=timedelta(0)
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "success"}
    assert dag_run.get_task_instances()[0].try_number == 1
    counters = wavespeed_connection.counters()
    assert counters["requests"]["submit"] == 1 and counters["submissions"] == {FLUX: 1}  # created once, never again
    log = task_output(capfd)
    assert "may have reached the API and created a paid prediction" in log and "looking for it" in log
    assert dag_xcoms(dag_run)[("submit", -1, "return_value")] == wavespeed_connection.submissions()[0]["id"]


def test_server_error_on_submit_fails_without_any_retry(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.add_fault("submit", "http_error", status=503)
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="submit", model=FLUX, inputs={"prompt": "x"}, retries=2, retry_delay=timedelta(0)
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "failed"}
    assert wavespeed_connection.counters()["requests"]["submit"] == 1
    log = task_output(capfd)
    assert "HTTP 503" in log and "the outcome is unknown" in log


@pytest.mark.parametrize(
    ("model", "inputs", "message"),
    [
        ("flux dev", {"prompt": "x"}, "invalid model id 'flux dev'"),
        ("../balance", {"prompt": "x"}, "invalid model id '../balance'"),
        (FLUX, "prompt: a cat", "inputs must be a dict of the model's inputs (or a JSON object string)"),
        (FLUX, {"prompt": "x", "image": b"\x89PNG"}, "inputs['image'] is a bytes"),
        (FLUX, {"prompt": "x", "sizes": [{1, 2}]}, "is a set"),
    ],
    ids=["space", "path", "text", "bytes", "set"],
)
def test_bad_model_or_inputs_fail_before_any_request(
    wavespeed_connection: WaveSpeedEmulator,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
    model: str,
    inputs: Any,
    message: str,
) -> None:
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(task_id="submit", model=model, inputs=inputs, retries=2, retry_delay=timedelta(0))
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("submit", -1): "failed"}
    assert dag_run.get_task_instances()[0].try_number == 1
    assert message in task_output(capfd)
    assert wavespeed_connection.counters()["total_requests"] == 0


# -- failures while waiting ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "deferrable",
    [
        pytest.param(
            True,
            marks=pytest.mark.xfail(
                AIRFLOW_3_0,
                strict=True,
                raises=AssertionError,
                reason=(
                    "Airflow 3.0 keeps next_method/next_kwargs when a resumed deferred task goes up_for_retry "
                    "(apache/airflow#56704, fixed in 3.1 by #56731): the retry skips execute() and re-runs "
                    "execute_complete on the previous try's event, so it fails again on the old prediction "
                    "instead of submitting a new one. The operator does not guard against that stale resume."
                ),
            ),
        ),
        False,
    ],
    ids=["deferred", "polling"],
)
def test_failed_generation_is_retried_by_airflow_retries(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, deferrable: bool
) -> None:
    """A prediction that failed is over, so a retry (a new, paid submit) is the user's call: retries=1."""
    wavespeed_connection.set_duration(0.2)
    wavespeed_connection.set_outcome("failed", error="emulated: worker crashed", times=1)
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "x"},
            wait_for_completion=True,
            deferrable=deferrable,
            poll_interval=0.2,
            retries=1,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("generate", -1): "success"}
    first, second = wavespeed_connection.submissions()
    assert wavespeed_connection.prediction_state(first["id"])["status"] == "failed"
    assert dag_xcoms(dag_run)[("generate", -1, "return_value")]["id"] == second["id"]


def test_wait_past_its_timeout_fails_without_resubmitting(
    wavespeed_connection: WaveSpeedEmulator, request: pytest.FixtureRequest, capfd: pytest.CaptureFixture[str]
) -> None:
    wavespeed_connection.hold()  # still running at the wait limit, however slowly the task starts
    with _dag(request) as dag:
        WaveSpeedSubmitOperator(
            task_id="generate",
            model=FLUX,
            inputs={"prompt": "x"},
            wait_for_completion=True,
            poll_interval=0.2,
            timeout=0.8,
            retries=2,
            retry_delay=timedelta(0),
        )
    dag_run = dag_test(dag)
    assert ti_states(dag_run) == {("generate", -1): "failed"}
    [submission] = wavespeed_connection.submissions()  # the running prediction was not paid for twice
    assert f"WaveSpeed prediction {submission['id']} did not finish before the wait limit" in task_output(capfd)
