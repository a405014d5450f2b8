"""WaveSpeedTaskSensor: wait for a prediction, deferred to the triggerer by default."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout, AirflowSkipException
from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.triggers.base import StartTriggerArgs

from airflow_provider_wavespeed._compat import sensor_flag_only_for_reschedule, triggerer_renders_start_trigger_args
from airflow_provider_wavespeed._outcome import (
    RETRYABLE_ERRORS,
    airflow_error,
    completed_result,
    end_in_triggerer_kwargs,
    keep_for_lineage,
    operator_lineage,
    prediction_from_event,
)
from airflow_provider_wavespeed._wait import (
    WaitingTask,
    airflow_timeout,
    default_deferrable,
    deferring,
    seconds_settings,
)
from airflow_provider_wavespeed.api import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
    Prediction,
    RetryPolicy,
    WaveSpeedError,
    WaveSpeedStorageError,
    ensure_success,
    note_unknown_status,
    validate_prediction_id,
)
from airflow_provider_wavespeed.hooks.wavespeed import WaveSpeedHook
from airflow_provider_wavespeed.triggers.wavespeed import WaveSpeedTaskTrigger

if TYPE_CHECKING:
    import os

    from airflow.sdk import Context, ObjectStoragePath

# Storing again only re-reads and re-copies, so a retry of the sensor may repeat any storage failure.
_STORE_RETRYABLE: tuple[type[WaveSpeedError], ...] = (*RETRYABLE_ERRORS, WaveSpeedStorageError)
# A poke told to slow down (429) gives the slot up, to the triggerer or to the next poke,
# instead of sleeping in it through a submit's long patience.
_POKE_RETRY = RetryPolicy(rate_limit_retries=1)
# A retry of the sensor waits again on the same prediction (nothing is resubmitted), so unless
# the DAG or the deployment chose otherwise it gets retries: they cover a failure no poll can
# prevent, such as Airflow's scheduler failing a resumed task by mistake when its trigger fired
# within seconds of the deferral (apache/airflow#72716). Errors no retry can fix stay final.
SENSOR_RETRIES = 2
SENSOR_RETRY_DELAY = timedelta(seconds=30)


def _default_retries(kwargs: dict[str, Any]) -> None:
    from airflow.providers.common.compat.sdk import conf

    given = {**(kwargs.get("default_args") or {}), **kwargs}
    if "retries" in given or conf.getint("core", "default_task_retries", fallback=0):
        return
    kwargs["retries"] = SENSOR_RETRIES
    if "retry_delay" not in given:
        kwargs["retry_delay"] = SENSOR_RETRY_DELAY


class WaveSpeedTaskSensor(WaitingTask, BaseSensorOperator):
    """Wait for a WaveSpeed prediction to finish and return it.

    Deferrable (the default): polls once, then defers to :class:`WaveSpeedTaskTrigger`,
    so no worker slot is held while the model runs. Otherwise it pokes with the sync hook
    every ``poll_interval`` seconds (``mode="poke"`` or ``"reschedule"``).

    Where the wait ends: in the triggerer, with no second worker run, when the prediction completed
    (its dict in XCom), unless the worker has work left: ``output_path`` (it stores the outputs),
    outlets (asset events), or outputs too large for XCom; every other end of the wait (a failed
    prediction, an error, the timeout) resumes in the worker. Where the wait
    starts: on Airflow 3.3+, an unmapped deferrable sensor whose ``prediction_id`` is an id or an
    unmapped task's ``.output`` starts in the triggerer, with no worker run at all (its
    ``prediction_id`` is rendered there); a Jinja template of the DAG's own only with
    ``start_from_trigger=True``, and an ``xcom_pull`` in it must give ``map_indexes``. A mapped
    sensor, or one inside a mapped task group, starts in a worker (Airflow cannot start mapped
    tasks in the triggerer).

    On success the XCom return value is the prediction (id, model, status, outputs,
    timings, ...), with ``cost_usd`` and ``unit_price_usd`` None and ``cost_note`` saying why (a
    prediction carries neither its price nor its inputs; the submit operator's ``unit_price_usd``
    XCom has the price when it priced them). A ``failed``, ``cancelled``, ``timeout`` or ``deleted``
    prediction fails the task with the API's error text and what its failure code means; a status this provider does
    not know is logged once and the wait goes on; past ``timeout`` seconds the sensor times out
    (skipped instead with ``soft_fail=True``).

    :param prediction_id: The prediction id (templated), e.g. ``"{{ ti.xcom_pull(task_ids='submit') }}"``.
    :param wavespeed_conn_id: The WaveSpeed connection id (templated).
    :param poll_interval: Longest wait between polls, in seconds (the first ones come sooner); a finite
        number > 0.
    :param timeout: Seconds to wait before timing out; a finite number > 0.
    :param deferrable: Defer to the triggerer (default True; see the README).
    :param end_from_trigger: Let the trigger end the task where it can (default True); False always
        resumes in a worker for ``execute_complete``.
    :param start_from_trigger: Start in the triggerer, without a worker run (default None: where
        Airflow supports it and ``prediction_id`` is an id or a task's ``.output``, see above; True
        also for a template, with a warning where it cannot); False always starts in a worker,
        which polls once first.
    :param retries: Default 2 (30 s apart) unless the DAG or ``[core] default_task_retries`` sets
        them: a retry only waits again on the same prediction. A mapped sensor gets Airflow's
        defaults instead (``.partial()`` does not run this constructor before scheduling): set
        ``retries`` in ``.partial()``, as the example DAGs do.
    :param output_path: Copy the outputs there and add ``stored_paths`` to the result (templated):
        a directory path, a URL (``file:///data/out/``, ``s3://bucket/prefix/``) or an
        ``ObjectStoragePath``. Files are named ``<prediction id>_<index>.<ext>``.
    :param cancel_on_kill: When a user kills the waiting task (mark failed/success, clear), cancel
        the prediction if it is unfinished (default True): from the trigger when deferred (Airflow
        3.3+; 3.0-3.2 see the README), from ``on_kill`` when poking in a worker. Never on a
        triggerer restart, a worker shutdown or a retry.
    :param cancel_on_timeout: When ``timeout`` passes, cancel the prediction if it is unfinished
        (default True); the timeout's message says it was cancelled.
    """

    template_fields: Sequence[str] = ("prediction_id", "output_path", "wavespeed_conn_id")
    ui_color = "#d9f2ff"

    def __init__(
        self,
        *,
        prediction_id: str,
        wavespeed_conn_id: str = WaveSpeedHook.default_conn_name,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_WAIT_TIMEOUT,
        deferrable: bool | None = None,
        output_path: str | os.PathLike[str] | ObjectStoragePath | None = None,
        end_from_trigger: bool = True,
        start_from_trigger: bool | None = None,
        cancel_on_kill: bool = True,
        cancel_on_timeout: bool = True,
        **kwargs: Any,
    ) -> None:
        # Before Airflow's own check (which allows 0 and infinity, and does not say which task).
        seconds_settings(str(kwargs.get("task_id")), self._settings(poll_interval, timeout), rendered=False)
        _default_retries(kwargs)
        super().__init__(poke_interval=poll_interval, timeout=timeout, **kwargs)
        # Only mode="reschedule" makes reschedule requests, which Airflow's scheduler looks up before it
        # starts a sensor: on Airflow 3.3 one query per task instance of a mapped task group, each time
        # it evaluates one not yet started (the flag is what adds that check).
        if sensor_flag_only_for_reschedule():
            self._is_sensor = self.mode == "reschedule"
        self.prediction_id = prediction_id
        self.wavespeed_conn_id = wavespeed_conn_id
        self.poll_interval = poll_interval
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.output_path = output_path
        # Not Airflow's attribute name: its DAG bag refuses a task whose end_from_trigger is true while
        # listeners exist; end_in_triggerer_kwargs() checks for listeners itself, when the wait starts.
        self.end_in_triggerer = end_from_trigger
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self._unknown_statuses: set[str] = set()  # predictions whose unknown status was logged
        self._waiting_in_worker: tuple[Any, str] | None = None  # (task instance, prediction id): for on_kill
        self._start_in_triggerer(start_from_trigger)

    @staticmethod
    def _settings(poll_interval: object, timeout: object) -> dict[str, tuple[object, float]]:
        return {"poll_interval": (poll_interval, DEFAULT_POLL_INTERVAL), "timeout": (timeout, 600.0)}

    def _start_in_triggerer(self, requested: bool | None) -> None:
        """Set Airflow's ``start_from_trigger``/``start_trigger_args`` where this sensor can start in the triggerer.

        The trigger gets ``prediction_id`` as text the triggerer renders (a task's ``.output``
        becomes an ``xcom_pull`` of that one XCom), and a relative ``timeout``: its deadline is the
        task instance's trigger timeout less the grace, fixed when Airflow defers it.
        """
        if requested is False:
            return
        template, why_not = self._prediction_id_template(requested=bool(requested))
        if not self.deferrable:
            why_not = "it needs deferrable=True"
        elif any(mark in self.wavespeed_conn_id for mark in ("{{", "{%")):
            # The trigger's kwargs would carry the template unrendered: only a worker renders it.
            why_not = "its wavespeed_conn_id is a template"
        elif not triggerer_renders_start_trigger_args():
            why_not = "this Airflow's triggerer does not render templates (Airflow 3.3+ does)"
        elif self.get_closest_mapped_task_group() is not None:
            why_not = "Airflow cannot start a task of a mapped task group in the triggerer"
        if template is None or why_not:
            if requested:
                warnings.warn(
                    f"{self.task_id}: start_from_trigger=True ignored ({why_not}); the sensor starts in a worker",
                    UserWarning,
                    stacklevel=3,
                )
            return
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls=f"{WaveSpeedTaskTrigger.__module__}.{WaveSpeedTaskTrigger.__qualname__}",
            trigger_kwargs={
                "prediction_id": template,
                "wavespeed_conn_id": self.wavespeed_conn_id,
                "poll_interval": float(self.poll_interval),
                "timeout": float(self.timeout),
                **end_in_triggerer_kwargs(self, enabled=self.end_in_triggerer, output_path=self.output_path),
                **self._cancel_kwargs(),
            },
            next_method="execute_complete",
            next_kwargs=None,
            # Airflow's backstop for a lost trigger; the trigger ends the wait its grace earlier.
            timeout=airflow_timeout(float(self.timeout)),
        )

    def _cancel_kwargs(self) -> dict[str, bool]:
        """Return the trigger's cancel options, only those set (the trigger's defaults are False)."""
        options = {"cancel_on_kill": self.cancel_on_kill, "cancel_on_timeout": self.cancel_on_timeout}
        return {name: True for name, value in options.items() if value}

    def _prediction_id_template(self, *, requested: bool) -> tuple[str | None, str]:
        """``prediction_id`` as text the triggerer may render, or None and why not.

        The triggerer of Airflow 3.3 answers a template's single-XCom reads (``GetXCom``) only: an
        ``xcom_pull`` without ``map_indexes`` asks for every map index (``GetXComSequenceSlice``),
        which it cannot decode, and the render then blocks its event loop, every trigger's, until
        its watchdog gives up. So a literal id or an unmapped task's ``.output`` (pulled with
        ``map_indexes=-1``) start there by default, a template the DAG wrote only when asked for.
        """
        value = self.prediction_id
        if isinstance(value, str):
            if not any(mark in value for mark in ("{{", "{%")):
                return value, ""
            if not requested:
                return None, "a templated prediction_id starts there only with start_from_trigger=True"
            if "xcom_pull" in value and "map_indexes" not in value:
                return None, (
                    "its xcom_pull has no map_indexes, a read Airflow's triggerer cannot answer; add "
                    "map_indexes=-1, e.g. \"{{ ti.xcom_pull(task_ids='submit', map_indexes=-1) }}\""
                )
            return value, ""
        from airflow.sdk.definitions.xcom_arg import PlainXComArg

        if isinstance(value, PlainXComArg):
            upstream = value.operator
            if upstream.is_mapped or upstream.get_closest_mapped_task_group() is not None:
                return None, "prediction_id comes from a mapped task: map this sensor too, or pull one map index"
            key = value.key or "return_value"
            return f"{{{{ ti.xcom_pull(task_ids={upstream.task_id!r}, key={key!r}, map_indexes=-1) }}}}", ""
        return None, (
            f"prediction_id {value!r} is neither a string nor a task's .output; pass a template such as "
            "\"{{ ti.xcom_pull(task_ids='submit', map_indexes=-1) }}\""
        )

    @cached_property
    def hook(self) -> WaveSpeedHook:
        return WaveSpeedHook(self.wavespeed_conn_id)

    @cached_property
    def _poke_hook(self) -> WaveSpeedHook:
        return WaveSpeedHook(self.wavespeed_conn_id, retry=_POKE_RETRY)

    def _prediction_id(self) -> str:
        try:
            return validate_prediction_id(self.prediction_id)
        except WaveSpeedError as exc:
            raise airflow_error(exc) from None

    def execute(self, context: Context) -> Any:
        # Again before the first poll: a subclass or a mapped expansion may have set them since __init__.
        seconds_settings(self.task_id, self._settings(self.poll_interval, self.timeout), rendered=True)
        if not self.deferrable:
            return self._poke_until_done(context)
        # One poll first, as Airflow's own deferrable sensors do: a wait that starts after the
        # prediction is over (or with a bad connection) ends here, with no deferral and no second
        # worker run, and so also outside the window of Airflow's stale defer-exit race
        # (apache/airflow#72716: a trigger firing at once can get its task failed by the scheduler).
        done = self.poke(context)
        if isinstance(done, PokeReturnValue):
            return done.xcom_value
        prediction_id = self._prediction_id()
        wait = deferring(self, f"WaveSpeed prediction {prediction_id} is")
        end = end_in_triggerer_kwargs(self, enabled=self.end_in_triggerer, output_path=self.output_path)
        self.defer(
            trigger=WaveSpeedTaskTrigger(prediction_id=prediction_id, **wait.trigger_kwargs(self), **end),
            method_name="execute_complete",
            timeout=wait.airflow_timeout,
        )

    def _poke_until_done(self, context: Context) -> Any:
        """Airflow's poke loop in this worker; at ``timeout``, cancel the prediction first (``cancel_on_timeout``)."""
        prediction_id = self._prediction_id()
        self._waiting_in_worker = (context["ti"], prediction_id)
        try:
            return super().execute(context)
        except (AirflowSensorTimeout, AirflowSkipException) as exc:
            # A skip is a timeout only with soft_fail (Airflow raises it instead); poke() never skips.
            if not self.cancel_on_timeout or (isinstance(exc, AirflowSkipException) and not self.soft_fail):
                raise
            try:
                cancelled = self._cancel_at_timeout(prediction_id)
            except Exception as cancel_error:  # the timeout is the news; say the cancel failed
                self.log.warning("Could not cancel WaveSpeed prediction %s: %s", prediction_id, cancel_error)
                raise exc from None
            if cancelled:
                exc.args = (f"{exc}; WaveSpeed prediction {prediction_id} was cancelled (cancel_on_timeout)",)
            raise
        finally:
            self._waiting_in_worker = None

    def poke(self, context: Context) -> bool | PokeReturnValue:
        prediction_id = self._prediction_id()
        try:
            prediction = self._poke_hook.get_prediction(prediction_id)
        except RETRYABLE_ERRORS as exc:  # the next poke may get through
            self.log.warning("Poll of %s failed, will poke again: %s", prediction_id, exc)
            return False
        except WaveSpeedError as exc:
            raise airflow_error(exc) from None
        if not prediction.is_terminal:
            note_unknown_status(prediction, self._unknown_statuses, self.log)
            self.log.info("WaveSpeed prediction %s is %s", prediction_id, prediction.status)
            return False
        try:
            ensure_success(prediction)
        except WaveSpeedError as exc:
            raise airflow_error(exc) from None
        return PokeReturnValue(is_done=True, xcom_value=self._completed(context, prediction))

    def _completed(self, context: Context, prediction: Prediction) -> dict[str, Any]:
        result = completed_result(
            context,
            prediction,
            output_path=self.output_path,
            hook=self.hook,
            outlets=self.outlets,
            retryable=_STORE_RETRYABLE,
            log=self.log,
        )
        keep_for_lineage(self, result)
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the model as job facet, the prediction as run facet, stored outputs as datasets."""
        return operator_lineage(self)

    def _reread(self, prediction_id: str) -> Prediction:
        try:
            return self.hook.get_prediction(prediction_id)
        except WaveSpeedError as exc:
            raise airflow_error(exc) from None

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: validate the event, fail or return the prediction."""
        prediction = prediction_from_event(
            event,
            prediction_id=self._prediction_id(),
            on_timeout=AirflowSensorTimeout,
            reread=self._reread if self.output_path else None,
        )
        try:
            ensure_success(prediction)
        except WaveSpeedError as exc:
            raise airflow_error(exc) from None
        self.log.info("WaveSpeed prediction %s completed with %d output(s)", prediction.id, len(prediction.outputs))
        return self._completed(context, prediction)
