"""The written results: JSON for tools, and the same tables in Markdown for README.md."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from .report import (
    CLAIM_HEADER,
    ROW_HEADER,
    Claim,
    Row,
    markdown_table,
    tally,
)

SMOKE_NOTE = "smoke: figures are not measurements"


def _finite(value: object) -> object:
    """NaN and infinity are not JSON: null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _row_json(row: Row) -> dict[str, object]:
    return {
        "scenario": row.scenario,
        "variant": row.variant,
        "requests_per_second": row.rate,
        "p50_seconds": row.p50,
        "p99_seconds": row.p99,
        "errors": row.errors,
        "selects": row.selects,
        "connections_opened": row.connections,
        "ratio": row.ratio,
        "ratio_to": row.ratio_to,
        "server_cpu_seconds_per_request": row.cpu,
        "details": dict(row.details),
    }


def _option(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def write(
    json_path: Path,
    header: Mapping[str, str],
    options: Mapping[str, object],
    rows: Sequence[Row],
    claims: Sequence[Claim],
) -> Path:
    """Write `json_path` and the Markdown beside it (same name, `.md`); the Markdown's path."""
    smoke = bool(options.get("smoke"))
    document = {
        "environment": dict(header),
        "options": dict(options),
        "note": SMOKE_NOTE if smoke else None,
        "rows": [_row_json(r) for r in rows],
        "claims": [
            {
                "verdict": c.verdict,
                "scenario": c.scenario,
                "claim": c.what,
                "measured": c.measured,
                "target": c.target,
            }
            for c in claims
        ],
        "summary": tally(claims),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(_finite(document), option=orjson.OPT_INDENT_2) + b"\n")

    lines = ["# cm-api benchmark", ""]
    if smoke:
        lines += [f"**{SMOKE_NOTE}**", ""]
    lines += [f"- {name}: {value}" for name, value in header.items()]
    lines += [f"- options: {' '.join(f'{k}={_option(v)}' for k, v in options.items())}", ""]
    lines += ["## Results", "", *markdown_table(ROW_HEADER, [r.cells() for r in rows]), ""]
    lines += ["## Claims", "", *markdown_table(CLAIM_HEADER, [c.cells() for c in claims]), ""]
    lines += [tally(claims), ""]
    md_path = json_path.with_suffix(".md")
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return md_path
