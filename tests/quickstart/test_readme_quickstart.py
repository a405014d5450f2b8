"""The README's quick start, followed word for word by a new user: a built wheel in a fresh venv.

Builds the wheel (and checks its metadata with ``twine check``), makes a new virtual environment,
runs the README's install command with the wheel in place of the PyPI name, in a new ``AIRFLOW_HOME``
runs the README's command that makes the DAGs folder and saves the README's first DAG there under the
file name the README gives, starts the emulator with the README's command, and runs the README's
commands against it. The one other change: the emulator's port, 8765 in the README,
is a free one here (the machine may be running other tests).

Minutes, not seconds (mostly pip installing Airflow from its cache), so it runs only when asked:
``scripts/test.sh`` runs it (``WAVESPEED_QUICKSTART=1``) in its background chain of checks.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
PACKAGE = "airflow-provider-wavespeed"

pytestmark = pytest.mark.skipif(
    not os.environ.get("WAVESPEED_QUICKSTART"),
    reason="builds a wheel and a fresh venv (minutes): scripts/test.sh runs it with WAVESPEED_QUICKSTART=1",
)


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(command: list[str] | str, env: dict[str, str], cwd: Path, timeout: float) -> str:
    done = subprocess.run(
        command,
        env=env,
        cwd=cwd,
        shell=isinstance(command, str),
        executable="/bin/bash" if isinstance(command, str) else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command!r} failed ({done.returncode}):\n{output[-6000:]}"
    return output


def test_a_new_user_runs_the_first_dag_from_the_built_wheel_against_the_emulator(tmp_path: Path) -> None:
    started = time.monotonic()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "WAVESPEED"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)

    # The wheel, as PyPI would get it; twine check is what PyPI's upload would refuse.
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)], env, tmp_path, 600)
    (wheel,) = dist.glob("airflow_provider_wavespeed-*.whl")
    twine = _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)], env, tmp_path, 120)
    assert "PASSED" in twine, twine

    # A fresh venv; the README's install command, with the wheel for the PyPI name.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], env, tmp_path, 120)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    install_block = _blocks(_section("Install"), "bash")[0]  # the next one is the recipe for Airflow 3.0/3.1
    (install,) = [line for line in install_block.splitlines() if line.startswith("pip install")]
    assert f'"{PACKAGE}[testing]"' in install
    _run(install.replace(PACKAGE, str(wheel)), env, tmp_path, 900)

    # The first DAG, saved where and as the README says, in a home that has no DAGs folder yet.
    first = _section("Your first DAG")
    (dag_source, *_) = _blocks(first, "python")
    file_name = re.search(r"Save this as `([^`]+)` in your DAGs folder \(`\$AIRFLOW_HOME/dags`", first)
    assert file_name, "the README must say where to save the first DAG"
    bash = _blocks(first, "bash")
    (mkdir_block,) = [block for block in bash if block.startswith("mkdir ")]
    (emulator_block,) = [block for block in bash if "python -m airflow_provider_wavespeed.testing" in block]
    (run_block,) = [block for block in bash if "airflow dags test" in block and "127.0.0.1:8765" in block]
    dags = Path(env["AIRFLOW_HOME"]) / "dags"
    assert not dags.exists()
    _run(mkdir_block, env, tmp_path, 60)
    (dags / file_name.group(1)).write_text(dag_source, encoding="utf-8")

    port = str(_free_port())
    emulator = subprocess.Popen(
        [*shlex.split(emulator_block.strip().replace("8765", port)), "--port", port],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert emulator.stdout is not None
        line = emulator.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in line, line
        output = _run(run_block.replace("8765", port), env, tmp_path, 600)
    finally:
        os.killpg(emulator.pid, signal.SIGTERM)
        emulator.wait(timeout=30)

    assert "Stored: ['<your home>/wavespeed-first-dag/<prediction id>_0.jpeg']" in first  # what the README promises
    home = Path("~/wavespeed-first-dag").expanduser()
    stored = re.search(rf"Stored: \['({re.escape(str(home))}/[0-9a-f]+_0\.jpeg)'\]", output)
    assert stored, output[-6000:]
    image = Path(stored.group(1))
    assert image.stat().st_size > 0
    image.unlink()  # the README's folder is in the real home: leave nothing of this run there
    with contextlib.suppress(OSError):
        home.rmdir()
    print(f"README quick start from a built wheel: {time.monotonic() - started:.0f} s")
