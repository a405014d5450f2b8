"""docs/promises.md, the table of the README's promises and their proofs, names only tests that exist.

Every row names at least one test, each tagged with how much it runs (deployment, dag.test, component,
unit); a row that does not say "no end-to-end test" names a deployment or dag.test one; and the README
links to the table. The tests are found by reading the test files (their function names, and a
parametrized id's values in its decorators), without importing them.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "promises.md"
KINDS = ("deployment", "dag.test", "component", "unit")
END_TO_END = ("deployment", "dag.test")
NO_END_TO_END = "no end-to-end test"
_ROW = re.compile(r"^\| (\d+) \| (.+) \| (.+) \| (.+) \|$")
_PROOF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(\[[^\]]*\])?` \(([^)]*)\)")


def _rows() -> list[tuple[int, str, str, str]]:
    rows = []
    for line in TABLE.read_text().splitlines():
        match = _ROW.match(line)
        if match:
            rows.append((int(match[1]), match[2], match[3], match[4]))
    return rows


@cache
def _tests(path: str) -> dict[str, str]:
    """Return the test functions of a file (module level and in ``Test`` classes): name -> decorators' source."""
    source = (REPO / path).read_text()
    found: dict[str, str] = {}
    nodes = ast.parse(source).body
    for node in nodes + [m for n in nodes if isinstance(n, ast.ClassDef) for m in n.body]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            found[node.name] = "\n".join(ast.get_source_segment(source, d) or "" for d in node.decorator_list)
    return found


def test_the_table_has_every_row_once_in_order() -> None:
    numbers = [number for number, *_ in _rows()]
    assert len(numbers) >= 80, "the table lost rows"
    assert numbers == list(range(1, len(numbers) + 1))


@pytest.mark.parametrize("row", _rows(), ids=lambda row: f"row{row[0]}")
def test_every_row_names_existing_tests_of_a_stated_kind(row: tuple[int, str, str, str]) -> None:
    number, promise, proof, runs_on = row
    proofs = _PROOF.findall(proof)
    assert proofs, f"row {number} ({promise}) names no test as `tests/<file>.py::<test>` (<kind>)"
    assert proof.count("`tests/") == len(proofs), f"row {number}: a test is not written `file::name` (kind)"
    kinds = set()
    for path, name, params, kind in proofs:
        assert (REPO / path).is_file(), f"row {number}: no file {path}"
        tests = _tests(path)
        assert name in tests, f"row {number}: no test {name} in {path}"
        for value in params.strip("[]").split("-") if params else []:
            assert value in tests[name], f"row {number}: {name} has no parameter {value!r}"
        word = next((k for k in KINDS if kind.startswith(k)), None)
        assert word, f"row {number}: {path}::{name} has no kind (one of {KINDS}), got {kind!r}"
        kinds.add(word)
    assert runs_on.strip(), f"row {number}: no versions"
    if NO_END_TO_END not in runs_on:
        assert kinds & set(END_TO_END), f"row {number}: no deployment or dag.test proof; say '{NO_END_TO_END}'"
    if "deployment" in kinds:
        assert "deployment 3.3" in runs_on, f"row {number}: a deployment test runs on 'deployment 3.3'"


def test_the_readme_links_to_the_table() -> None:
    assert "docs/promises.md" in (REPO / "README.md").read_text()
