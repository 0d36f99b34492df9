"""Development tooling does not ship: the wheel and the image carry `service/` only.

devtools/ (a private MariaDB that can run apt-get, `make run`), tests/ and bench/ live beside the
package; these tests keep the package from importing them and the build from picking them up.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE = ROOT / "service"

# Top-level modules the service must never import: tooling outside the package, and the means to
# run programs (only dev tooling starts servers or apt-get).
_FORBIDDEN_IMPORTS = frozenset({"devtools", "tests", "bench", "subprocess"})


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    # ast.walk also reaches imports inside functions, which a grep of the top would miss.
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_service_module_imports_development_tooling() -> None:
    offenders = {
        f"{path.relative_to(ROOT)}: import {name}"
        for path in SERVICE.rglob("*.py")
        for name in _imported_modules(path)
        if name.split(".")[0] in _FORBIDDEN_IMPORTS
    }
    assert not offenders, sorted(offenders)


def test_the_wheel_carries_the_service_modules_only(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    # bdist_wheel puts build_py's output in the wheel; running build_py alone needs no `wheel`
    # package. A copy of the tree, because build_py also writes egg-info next to pyproject.toml.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "*.egg-info", ".*_cache", "build", "dist", "results"
        ),
    )
    build_lib = tmp_path / "lib"
    setup = "from setuptools import setup; setup()"
    result = subprocess.run(
        [sys.executable, "-c", setup, "-q", "build_py", "--build-lib", str(build_lib)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    packaged = {p.relative_to(build_lib).as_posix() for p in build_lib.rglob("*") if p.is_file()}
    expected = {p.relative_to(ROOT).as_posix() for p in SERVICE.rglob("*.py")}
    assert packaged == expected


def test_the_image_copies_only_what_the_build_reads() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    sources = {
        source
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", dockerfile, flags=re.MULTILINE)
        for source in line.split()[:-1]
    }
    assert sources == {"pyproject.toml", "README.md", "service/"}
