"""Where the figures were measured: machine, kernel, versions of the software under test and of
the load generator. Goes at the head of the written results."""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Final

PACKAGES: Final = ("aiohttp", "asyncmy", "aiomysql", "uvloop", "orjson")


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"? x {os.cpu_count()}"
    models = [line.partition(":")[2].strip() for line in lines if line.startswith("model name")]
    model = models[0] if models else platform.processor() or "?"
    return f"{model} x {len(models) or os.cpu_count()}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(mariadb: str, wrk: str) -> dict[str, str]:
    """The header facts, in the order they are printed."""
    return {
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "CPU": _cpu(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        **{package: _version(package) for package in PACKAGES},
        "MariaDB": mariadb,
        "wrk": wrk,
    }
