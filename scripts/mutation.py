"""Mutation testing of the money-critical modules: a release check, not part of CI (it takes minutes).

    python scripts/mutation.py                       every module of MODULES, with its tests
    python scripts/mutation.py airflow_provider_wavespeed/api/retry.py
    python scripts/mutation.py path/to/module.py=tests/a.py,tests/b.py   a module not (yet) in MODULES

mutmut (3.x) changes one thing at a time in a module (an operator, a constant, a condition...) and
runs the tests that cover the changed function; a change no test notices "survived". The run works
in a copy of the tree (``.mutation/``, git-ignored: mutmut writes its ``mutants/`` there), never in
the tree itself, and prints per module: mutants, killed (a timeout counts: the tests noticed),
survived, and the score. Survivors listed in ``docs/mutation.md`` (equivalent mutants: no behaviour
changed, with the reason) are counted apart; a survivor not listed there is printed with its diff.
Run it with the environment the tests run in (the dev extra, plus ``.[mutation]``; mutmut is
installed here when missing). ``--max-children``: parallel mutants (default 2: the CI machine's cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKDIR = REPO / ".mutation"
EQUIVALENTS = REPO / "docs" / "mutation.md"
MUTMUT = "mutmut>=3.8,<4"

# The modules under mutation, each with the fast tests that cover it (the one place to change on a rename).
# Only the unit/emulator tests of the module: a mutant runs the ones of these that call the changed function.
_API_TESTS = (
    "tests/api/test_client.py",
    "tests/api/test_errors.py",
    "tests/api/test_transport_edges.py",
)
MODULES: dict[str, tuple[str, ...]] = {
    # the poll decider (PollRounds) and the waits around it (the client's and the triggers' tests prove
    # the waits end to end, but a mutant that stalls a wait makes each of them run to its timeout: minutes)
    # and PollSchedule (the waits between polls)
    "airflow_provider_wavespeed/api/polling.py": ("tests/api/test_poll_rounds.py", "tests/api/test_retry_policy.py"),
    # the retry policy
    "airflow_provider_wavespeed/api/retry.py": (*_API_TESTS, "tests/api/test_retry_policy.py"),
    # reconciliation of an unknown submit outcome with the history
    "airflow_provider_wavespeed/api/_reconcile.py": (
        "tests/api/test_reconcile.py",
        "tests/api/test_reconcile_rules.py",
        "tests/api/test_cancel_and_history.py",
    ),
    # the batch window: one window of submits and what each answer means
    # (tests/operators/test_batch.py proves it end to end, through dag.test(): minutes per mutant on 2 cores)
    "airflow_provider_wavespeed/api/_batch.py": ("tests/api/test_batch_window.py",),
    # when a task's predictions are cancelled (a user's kill, never a restart, shutdown or retry); the
    # real task-instance state is read in tests/triggers/test_promise_cancel_real_state.py, whose
    # metadata database fixtures hang in a forked mutant (every mutant a false "timeout" kill)
    "airflow_provider_wavespeed/triggers/_cancel.py": (
        "tests/triggers/test_trigger_cancel.py",
        "tests/triggers/test_cancel_rules.py",
    ),
    # the paid-work records (their operators' dag.test() tests prove them end to end: minutes per mutant); here
    # Airflow's own task state store accessor and Variable, answered by a stand-in supervisor (tests/records)
    "airflow_provider_wavespeed/_records.py": ("tests/records/test_record_store.py",),
    "airflow_provider_wavespeed/_submit_record.py": ("tests/records/test_submit_record.py",),
    "airflow_provider_wavespeed/_batch_record.py": ("tests/records/test_batch_record.py",),
}
# Modules whose tests are not fork-safe (forked from the process that ran them once, a mutant's tests
# hang and read as timeouts, i.e. as false kills): their mutants are forked from a clean server process.
FORK_UNSAFE = frozenset({"airflow_provider_wavespeed/triggers/_cancel.py"})

_STATUS = re.compile(r"^\s+(?P<name>\S+__mutmut_\d+): (?P<status>.+)$")
_LISTED = re.compile(r"`(airflow_provider_wavespeed\.[\w.]+__mutmut_\d+)`")
_KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module paths (default: every module of MODULES); PATH=TESTS,...")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help=f"the copy of the tree (default {WORKDIR.name}/)")
    parser.add_argument("--no-diffs", action="store_true", help="do not print the diff of each unlisted survivor")
    parser.add_argument(
        "--forkserver",
        action="store_true",
        help="fork each mutant from a clean server process: for tests that are not fork-safe (the trigger "
        "tests: forked from the process that ran them once, their mutants hang and read as timeouts); "
        "on by itself for the modules of FORK_UNSAFE",
    )
    return parser.parse_args()


def _selection(arguments: list[str]) -> dict[str, tuple[str, ...]]:
    if not arguments:
        return dict(MODULES)
    chosen: dict[str, tuple[str, ...]] = {}
    for argument in arguments:
        path, _, tests = argument.partition("=")
        if tests:
            chosen[path] = tuple(tests.split(","))
        elif path in MODULES:
            chosen[path] = MODULES[path]
        else:
            sys.exit(f"{path}: not in MODULES of {Path(__file__).name}; name its tests: {path}=tests/a.py,tests/b.py")
    for path, tests in chosen.items():
        for name in (path, *tests):
            if not (REPO / name).is_file():
                sys.exit(f"{name}: no such file")
    return chosen


def _ensure_mutmut() -> Path:
    if importlib.util.find_spec("mutmut") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", MUTMUT], check=True)
    return Path(sys.executable).with_name("mutmut")


def _copy_tree(workdir: Path) -> None:
    """Copy the working tree's files (tracked and new, not ignored) to ``workdir``: mutmut runs there."""
    shutil.rmtree(workdir, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _write_config(workdir: Path, chosen: dict[str, tuple[str, ...]], *, forkserver: bool) -> None:
    tests = list(dict.fromkeys(test for module_tests in chosen.values() for test in module_tests))

    def lines(values: list[str]) -> str:
        return "".join(f"\n    {value}" for value in values)

    # setup.cfg, not pyproject.toml: the module list is the command's, not the project's.
    (workdir / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths = airflow_provider_wavespeed\n"
        f"only_mutate ={lines(list(chosen))}\n"
        f"pytest_add_cli_args_test_selection ={lines(tests)}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -m\n    not deployment and not live\n"
        "also_copy =\n    example_dags\n    scripts\n"
        f"process_isolation = {'forkserver' if forkserver else 'fork'}\n"
    )


def _equivalents() -> set[str]:
    return set(_LISTED.findall(EQUIVALENTS.read_text())) if EQUIVALENTS.is_file() else set()


def main() -> int:
    """Run mutmut on the chosen modules in a copy of the tree; print each module's score."""
    args = _arguments()
    chosen = _selection(args.modules)
    mutmut = _ensure_mutmut()
    workdir = args.workdir.resolve()
    _copy_tree(workdir)
    _write_config(workdir, chosen, forkserver=args.forkserver or not FORK_UNSAFE.isdisjoint(chosen))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the mutated copy (mutants/) must be the package the tests import
    print(f"mutmut on {len(chosen)} module(s) in {workdir}/ (a copy of the tree)", flush=True)
    subprocess.run([str(mutmut), "run", "--max-children", str(args.max_children)], cwd=workdir, env=env, check=True)
    listing = subprocess.run(
        [str(mutmut), "results", "--all", "true"], cwd=workdir, env=env, check=True, capture_output=True, text=True
    ).stdout
    statuses = {m["name"]: m["status"] for m in map(_STATUS.match, listing.splitlines()) if m}
    equivalent = _equivalents()
    module_of = {path.removesuffix(".py").replace("/", "."): path for path in chosen}
    tally: dict[str, Counter[str]] = {path: Counter() for path in chosen}
    unlisted: list[str] = []
    for name, status in statuses.items():
        module = next((m for m in module_of if name.startswith(m + ".")), None)
        if module is None:
            continue
        counts = tally[module_of[module]]
        counts["mutants"] += 1
        if status in _KILLED:
            counts["killed"] += 1
        elif name in equivalent:
            counts["equivalent"] += 1
        else:
            counts["survived"] += 1
            unlisted.append(f"{name}: {status}")
    print(f"\n{'module':<48} {'mutants':>7} {'killed':>7} {'equiv.':>7} {'survived':>8} {'score':>7}")
    for path, counts in tally.items():
        judged = counts["mutants"] - counts["equivalent"]
        score = 100.0 * counts["killed"] / judged if judged else 100.0
        print(
            f"{path:<48} {counts['mutants']:>7} {counts['killed']:>7} {counts['equivalent']:>7} "
            f"{counts['survived']:>8} {score:>6.1f}%"
        )
    stale = sorted(
        name
        for name in equivalent
        if any(name.startswith(m + ".") for m in module_of) and statuses.get(name, "killed") in _KILLED
    )
    if stale:
        print(f"\nListed as equivalent in {EQUIVALENTS.relative_to(REPO)} but killed or gone (update the list):")
        print("\n".join(f"  {name}" for name in stale))
    if unlisted:
        print(f"\n{len(unlisted)} survivor(s) neither killed nor listed in {EQUIVALENTS.relative_to(REPO)}:")
        for line in sorted(unlisted):
            print(f"  {line}")
            if not args.no_diffs:
                name = line.split(":")[0]
                diff = subprocess.run([str(mutmut), "show", name], cwd=workdir, env=env, capture_output=True, text=True)
                print("\n".join(f"      {row}" for row in diff.stdout.splitlines()[1:]))
    return 1 if unlisted or stale else 0


if __name__ == "__main__":
    sys.exit(main())
