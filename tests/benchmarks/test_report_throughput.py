"""The throughput section of docs/benchmarks.md: replaced alone, kept by the main suite's rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.report import THROUGHPUT_END, THROUGHPUT_START, splice_throughput, throughput_of

OLD = f"{THROUGHPUT_START}\nold table\n{THROUGHPUT_END}"
NEW = f"{THROUGHPUT_START}\nnew table\n{THROUGHPUT_END}"


def test_the_section_is_replaced_and_the_rest_of_the_report_kept() -> None:
    report = f"# Benchmarks\n\nsuite figures\n\n{OLD}\n\nafter\n"
    assert splice_throughput(report, NEW) == f"# Benchmarks\n\nsuite figures\n\n{NEW}\n\nafter\n"
    assert throughput_of(splice_throughput(report, NEW)) == NEW


def test_a_report_without_the_section_gets_it_at_the_end() -> None:
    assert splice_throughput("# Benchmarks\n\nsuite figures\n", NEW) == f"# Benchmarks\n\nsuite figures\n\n{NEW}\n"
    assert splice_throughput("", NEW) == f"{NEW}\n"
    assert throughput_of("# Benchmarks\n") is None


def test_the_main_suites_rewrite_keeps_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = tmp_path / "benchmarks.md"
    previous.write_text(f"# Benchmarks\n\nlast suite figures\n\n{OLD}\n")
    monkeypatch.setattr(report, "_render", lambda results: "# Benchmarks\n\nnew suite figures\n")
    assert report.render({"smoke": False}, previous=previous) == f"# Benchmarks\n\nnew suite figures\n\n{OLD}\n"
    assert report.render({"smoke": True}) == "# Benchmarks\n\nnew suite figures\n"  # a smoke report stands alone
