"""The README as a user of the wheel meets it: PyPI's page of the package, and what the wheel installs.

The README is the package's long description, so every link in it must work from PyPI, where a
relative link or image opens nothing: each one is an absolute ``https`` link (not fetched here: no
network) or an anchor of the rendered page itself. A path it names for the user to open is either
in the installed wheel or not named at all; only the Development section (the source tree's own
demo and tests) names the repository's files. The rendering is PyPI's: ``readme_renderer`` (with
its Markdown extra), on the description the built wheel's metadata carries, after ``twine check``.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = "airflow_provider_wavespeed/example_dags"
# The repository's own folders and files, none of which the wheel contains.
REPOSITORY_PATH = re.compile(
    r"^(\./)?(tests|scripts|docs|benchmarks|example_dags|\.github|\.demo)(/|$)|^(CHANGELOG\.md|LICENSE|MANIFEST\.in)$"
)


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command!r} failed ({done.returncode}):\n{output[-4000:]}"
    return output


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel as a release would, from the source tree."""
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(REPO)], cwd=dist)
    (built,) = dist.glob("airflow_provider_wavespeed-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the wheel alone (no dependencies, nothing from the source tree) into a new folder."""
    target = tmp_path_factory.mktemp("site-packages")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(target)]
    _run([*pip, str(wheel)], target)
    return target


@pytest.fixture(scope="module")
def description(wheel: Path) -> str:
    """Return the README as the wheel's metadata carries it to PyPI."""
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(archive.read(name))
    assert metadata["Description-Content-Type"].startswith("text/markdown")
    payload = metadata.get_payload()
    assert isinstance(payload, str)
    return payload


@pytest.fixture(scope="module")
def page(wheel: Path, description: str) -> str:
    """Render the description as PyPI does, after ``twine check``."""
    from readme_renderer.markdown import render, variants

    # Without its Markdown extra, readme_renderer renders nothing and twine check still passes.
    assert variants, "install readme-renderer[md] (the dev extra) to render the README as PyPI does"

    twine = _run([sys.executable, "-m", "twine", "check", "--strict", str(wheel)], cwd=wheel.parent)
    assert "PASSED" in twine, twine
    html = render(description, variant="GFM")
    assert html is not None
    return html


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "a" and "href" in values:
            self.hrefs.append(values["href"])
        if tag == "img":
            self.images.append(values.get("src", ""))


def _prose(markdown: str) -> str:
    """Return the Markdown outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)


def _before_development(markdown: str) -> str:
    start = markdown.index("\n## Development\n")
    return markdown[:start]


def test_every_link_of_the_pypi_page_opens_something(page: str) -> None:
    links = _Links()
    links.feed(page)
    assert links.hrefs, "the rendered page has no links at all: not PyPI's rendering"
    # PyPI shows no relative image; the README describes what a screenshot showed instead.
    assert links.images == []
    broken = []
    for href in links.hrefs:
        if href.startswith("#"):
            if href[1:] not in links.ids:
                broken.append(href)
        elif not href.startswith("https://"):
            broken.append(href)
    assert broken == [], f"links that open nothing on PyPI: {broken}"


def test_the_readme_names_no_repository_file_for_a_wheel_user(description: str, installed: Path) -> None:
    user_part = _prose(_before_development(description))
    paths = set(re.findall(r"`([^`\s]+)`", user_part))
    repository_only = sorted(path for path in paths if REPOSITORY_PATH.search(path))
    assert repository_only == [], "repository paths in the README's user sections"
    for path in sorted(p for p in paths if p.startswith("airflow_provider_wavespeed/")):
        assert (installed / path).exists(), f"the README names {path}, which the wheel does not install"


def test_the_readme_command_prints_where_the_installed_examples_are(description: str, installed: Path) -> None:
    section = re.search(r"^### The example DAGs\n(.*?)(?=^##)", description, re.S | re.M)
    assert section, "the README must say where the example DAGs are"
    (command,) = re.findall(r"^```bash\n(.*?)^```", section.group(1), re.S | re.M)
    # Only the installed wheel on the path: not the source tree, not the test's environment.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(installed), "HOME": str(installed)}
    shown = _run(["/bin/bash", "-c", command.replace("python ", f"{sys.executable} ", 1)], installed, env)
    folder = Path(shown.strip())
    assert folder == installed / EXAMPLES
    wheel_files = {path.name for path in folder.iterdir()}
    source_files = {path.name for path in (REPO / EXAMPLES).iterdir() if path.name != "__pycache__"}
    assert source_files <= wheel_files  # every example and the files they read (prompts.txt, the image)
    for name in re.findall(r"`(wavespeed_\w+\.(?:py|png))`|`(prompts\.txt)`", section.group(1)):
        assert (folder / (name[0] or name[1])).is_file()
