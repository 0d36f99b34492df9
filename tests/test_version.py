"""One version source: pyproject.toml's `version`. The package reads it through importlib.metadata
(`cm-api --version`, cmapi_build_info), `make image` passes it to the Dockerfile's label and tag,
and no other file spells it out, except the changelog's history and the example overlay's image
tag, which must equal it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Final

import pytest
import yaml

from service import __version__

ROOT: Final = Path(__file__).resolve().parent.parent
VERSION: Final[str] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))[
    "project"
]["version"]
EXAMPLE_OVERLAY: Final = "deploy/k8s/overlays/example/kustomization.yaml"
# The source, the history of released versions, and a copy checked below.
MAY_NAME_IT: Final = frozenset({"pyproject.toml", "CHANGELOG.md", EXAMPLE_OVERLAY})


def project_files() -> list[str]:
    """Tracked files and new ones not ignored, relative to the root."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return sorted(set(listed.stdout.splitlines()))


def test_no_other_file_hard_codes_the_version() -> None:
    # Not part of a longer version or address (10.1.0.5), whatever punctuation follows.
    spelled = re.compile(rf"(?<![\d.]){re.escape(VERSION)}(?!\.?\d)")
    found = []
    for name in project_files():
        path = ROOT / name
        if name in MAY_NAME_IT or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text
        found += [
            f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if spelled.search(line)
        ]
    assert found == [], f"{VERSION} is pyproject.toml's to state; derive it instead"


def test_the_package_reports_pyprojects_version() -> None:
    # The Makefile reinstalls the package whenever pyproject.toml changes.
    assert __version__ == VERSION, "reinstall the package (make venv) after changing the version"


def test_the_example_overlay_deploys_this_version() -> None:
    """An operator's overlay picks its own tag; the example's is the image this tree builds."""
    overlay = yaml.safe_load((ROOT / EXAMPLE_OVERLAY).read_text(encoding="utf-8"))
    assert [image["newTag"] for image in overlay["images"]] == [VERSION]


def test_the_image_label_comes_from_the_build_argument() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[1:]
    assert len(stages) == 2
    for stage in stages:
        # Declared in each stage that reads it, with no default that could go stale.
        assert re.search(r"^ARG VERSION$", stage, flags=re.MULTILINE), stage.splitlines()[0]
    builder, final = stages
    assert "/wheels/cm_api-${VERSION:?" in builder  # the label must be the wheel's version
    assert 'org.opencontainers.image.version="${VERSION}"' in final


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_passes_pyprojects_version_to_the_image_build() -> None:
    shown = subprocess.run(
        ["make", "-s", "version"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout == f"{VERSION}\n"
    planned = subprocess.run(
        ["make", "-n", "image", "IMAGE=registry.example.com/ops/cm-api"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f"--build-arg VERSION={VERSION} -t registry.example.com/ops/cm-api:{VERSION} ." in (
        planned.stdout
    )
