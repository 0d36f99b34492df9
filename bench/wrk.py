"""Running wrk pinned to the client CPU and reading its report."""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from typing import Final

from .processes import CLIENT_CPU, taskset

_UNITS: Final = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE: Final = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_PERCENTILE: Final = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_TOTAL: Final = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_NON_2XX: Final = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS: Final = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_second: float
    requests: int
    p50: float  # seconds
    p99: float
    errors: int  # socket errors plus non-2xx/3xx answers


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: apt-get update && apt-get install -y wrk")
    return found


async def run_wrk(url: str, seconds: float, connections: int = 50) -> WrkResult:
    argv = [
        taskset(),
        "-c",
        str(CLIENT_CPU),
        wrk_path(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        url,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:  # cancelled (Ctrl-C): wrk must not outlive the run
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
