"""A real Prometheus (Debian's `prometheus` package), started with the scrape configuration in
deploy/prometheus/, scrapes a running cm-api: its `up` is 1 and a cm-api series arrives.

Only the target address, the scrape interval and its time-out differ from the file in deploy/
(the test server's port is not 8080, and a test should not wait 15 s for the first scrape)."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from .conftest import ROOT, free_port, prometheus_tool

Client = TestClient[web.Request, web.Application]
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
STARTUP_LIMIT = 60.0  # seconds for Prometheus to start and scrape at least once


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def test_real_prometheus_scrapes_the_service(client: Client, tmp_path: Path) -> None:
    binary = prometheus_tool("prometheus")
    config = CONFIG.read_text(encoding="utf-8")
    assert '"127.0.0.1:8080"' in config
    assert "scrape_interval: 15s" in config
    config = config.replace('"127.0.0.1:8080"', f'"127.0.0.1:{client.port}"')
    config = config.replace("scrape_interval: 15s", "scrape_interval: 1s")
    config = config.replace("scrape_timeout: 5s", "scrape_timeout: 1s")
    (tmp_path / "prometheus.yml").write_text(config, encoding="utf-8")
    await client.get("/acc/")
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        up: list[dict[str, Any]] = []
        misses: list[dict[str, Any]] = []
        for _ in range(int(STARTUP_LIMIT / 0.5)):
            assert process.returncode is None, log.read_text(errors="replace")
            try:
                up = await asyncio.to_thread(query, port, 'up{job="cm-api"}')
                misses = await asyncio.to_thread(
                    query, port, 'cmapi_cache_requests_total{resource="acc",result="miss"}'
                )
            except OSError:
                up = []  # not listening yet
            if up and up[0]["value"][1] == "1" and misses:
                break
            await asyncio.sleep(0.5)
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)
    assert [(s["metric"]["instance"], s["value"][1]) for s in up] == [
        (f"127.0.0.1:{client.port}", "1")
    ]
    assert [s["value"][1] for s in misses] == ["1"]
