"""The batch operator renders its templated fields as Airflow does, without compiling plain strings."""

from __future__ import annotations

from typing import Any

import jinja2.ext
import pendulum
import pytest
from airflow.sdk import DAG, BaseOperator

from airflow_provider_wavespeed.operators.batch import WaveSpeedBatchOperator


class Shout(jinja2.ext.Extension):
    """An extension that rewrites the source before Jinja reads it."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return source.upper()


CONTEXT = {"ds": "2026-01-01", "params": {"style": "watercolour"}}
# What a prompt may hold: plain text, markup of the default environment or of a custom one, line
# endings Jinja rewrites, a final newline, text that looks like markup but is not, a file's name.
TEXTS = [
    "a red fox",
    "  spaced out  ",
    "",
    "{{ ds }} sunrise",
    "a {% if true %}fox{% endif %}",
    "a fox {# a comment #}",
    "curly { braces } and {single}",
    "line one\nline two",
    "line one\r\nline two\r",
    "ends with a newline\n",
    "[[ ds ]] in custom delimiters",
    "<% if true %>x<% endif %>",
    "## a line comment in custom syntax",
    "% a line statement in custom syntax",
    "looks like a file.sql",
    "1",
    "[1, 2]",
]
DAG_OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "native": {"render_template_as_native_obj": True},
    "custom": {
        "jinja_environment_kwargs": {
            "variable_start_string": "[[",
            "variable_end_string": "]]",
            "block_start_string": "<%",
            "block_end_string": "%>",
            "line_comment_prefix": "##",
            "line_statement_prefix": "%",
            "keep_trailing_newline": False,
            "newline_sequence": "\r\n",
        }
    },
    "extensions": {"jinja_environment_kwargs": {"extensions": ["jinja2.ext.i18n", Shout]}},
}


def _operator(dag_options: dict[str, Any]) -> WaveSpeedBatchOperator:
    with DAG(dag_id="rendering", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), **dag_options):
        return WaveSpeedBatchOperator(
            task_id="batch", model="wavespeed-ai/flux-dev", inputs=[{"prompt": t} for t in TEXTS]
        )


@pytest.mark.parametrize("dag_options", DAG_OPTIONS.values(), ids=DAG_OPTIONS.keys())
def test_every_input_renders_exactly_as_airflow_renders_it(dag_options: dict[str, Any]) -> None:
    operator = _operator(dag_options)
    operator.template_ext = (".sql",)  # a template file's name is rendered from the file, as Airflow does
    env = operator.get_template_env()
    renderable = []
    for text in TEXTS:
        try:
            expected: Any = BaseOperator.render_template(operator, text, CONTEXT, env)
        except Exception as exc:  # no such template file; markup that is not valid Jinja
            with pytest.raises(type(exc)):
                operator.render_template(text, CONTEXT, env)
            continue
        assert operator.render_template(text, CONTEXT, env) == expected, repr(text)
        renderable.append(text)
    assert len(renderable) >= len(TEXTS) - 3  # the file's name, and markup that is not valid there
    # A whole list of inputs, as the task renders its field.
    inputs = [{"prompt": text} for text in renderable]
    assert operator.render_template(inputs, CONTEXT, env) == BaseOperator.render_template(
        operator, inputs, CONTEXT, env
    )


def test_plain_prompts_are_not_compiled_and_templated_ones_are(monkeypatch: pytest.MonkeyPatch) -> None:
    operator = _operator({})
    env = operator.get_template_env()
    compiled: list[str] = []
    from_string = env.from_string
    monkeypatch.setattr(
        env, "from_string", lambda source, *a, **k: compiled.append(source) or from_string(source, *a, **k)
    )
    inputs = [{"prompt": f"a fox {index}"} for index in range(1_000)] + [{"prompt": "{{ ds }} fox"}]
    rendered = operator.render_template(inputs, CONTEXT, env)
    assert rendered[-1] == {"prompt": "2026-01-01 fox"} and rendered[:3] == inputs[:3]
    assert compiled == ["{{ ds }} fox"]
