"""wrk: finding (or installing) it, running it pinned to the client CPU, reading its report."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .processes import CLIENT_CPU, taskset
from .report import say

_UNITS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE: Final = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_PERCENTILE: Final = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_TOTAL: Final = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_NON_2XX: Final = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS: Final = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
INSTALL: Final = "apt-get install -y wrk"
APT_TIMEOUT: Final = 300.0
OVERRUN: Final = 30.0  # seconds wrk may take beyond its duration before it counts as hung


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_second: float
    requests: int
    p50: float  # seconds
    p99: float
    errors: int  # socket errors plus non-2xx/3xx answers


def _apt_get(*args: str) -> bool:
    say(f"  running apt-get {' '.join(args)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        say("    " + "\n    ".join((done.stdout + done.stderr).strip().splitlines()[-5:]))
    return done.returncode == 0


def ensure_wrk() -> str:
    """wrk's path. When it is missing and this is root on a Debian-like system, install Debian's
    package (refreshing the package lists only if the first attempt fails)."""
    if (found := shutil.which("wrk")) is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise WrkError(f"wrk is not installed; install it (Debian/Ubuntu: {INSTALL}) and rerun")
    say("  wrk is not installed; installing Debian's package")
    if not _apt_get("install", "-y", "wrk") and _apt_get("update"):
        _apt_get("install", "-y", "wrk")
    if (found := shutil.which("wrk")) is None:
        raise WrkError(f"could not install wrk; run `apt-get update && {INSTALL}` and rerun")
    return found


def wrk_version() -> str:
    """The first line of `wrk -v` (name, version, event backend)."""
    found = shutil.which("wrk")
    if found is None:
        return "not installed"
    done = subprocess.run([found, "-v"], capture_output=True, text=True, timeout=10, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


async def run_wrk(
    url: str, seconds: float, connections: int, headers: Mapping[str, str] | None = None
) -> WrkResult:
    """`wrk -t1 -c<connections> --latency` for `seconds` (whole seconds, at least 1: wrk
    takes no less)."""
    argv = [
        taskset(),
        "-c",
        str(CLIENT_CPU),
        ensure_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds + OVERRUN)
    finally:
        if proc.returncode is None:  # cancelled or hung: wrk must not outlive the run
            proc.kill()
            await proc.wait()
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with {proc.returncode}: {err.decode(errors='replace')}")
    return parse(text)


def parse(text: str) -> WrkResult:
    rate = _RATE.search(text)
    total = _TOTAL.search(text)
    if rate is None or total is None:
        raise WrkError(f"cannot read wrk's output:\n{text}")
    percentiles = {
        int(m.group(1)): float(m.group(2)) * _UNITS[m.group(3)] for m in _PERCENTILE.finditer(text)
    }
    if 50 not in percentiles or 99 not in percentiles:
        raise WrkError(f"wrk printed no latency distribution:\n{text}")
    errors = 0
    if (non_2xx := _NON_2XX.search(text)) is not None:
        errors += int(non_2xx.group(1))
    if (sock := _SOCKET_ERRORS.search(text)) is not None:
        errors += sum(int(g) for g in sock.groups())
    return WrkResult(
        requests_per_second=float(rate.group(1)),
        requests=int(total.group(1)),
        p50=percentiles[50],
        p99=percentiles[99],
        errors=errors,
    )
