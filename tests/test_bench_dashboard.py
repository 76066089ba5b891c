"""The dashboard benchmark at a tiny scale (KASKAD_BENCH_SCALE), so it cannot rot: `python
-m bench --only dashboard` serves every page of its table with 200 on both stores and
reports its shape (no timing is asserted)."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench import dashboard
from bench.__main__ import main
from tests.pgdb import pg_schema


async def test_the_dashboard_bench_runs_every_page_on_both_stores(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KASKAD_BENCH_SCALE", "0.001")
    async with pg_schema() as url:
        monkeypatch.setenv("KASKAD_BENCH_POSTGRES", url.partition("?")[0])
        assert await asyncio.to_thread(main, ["--only", "dashboard"]) == 0
    report = json.loads(capsys.readouterr().out)["dashboard"]
    assert report["messages"] >= 1000 and report["rules"] == dashboard.RULES
    names = [name for name, _ in dashboard.PAGES]
    for store in ("sqlite", "postgres"):
        result = report[store]
        assert list(result["pages"]) == names
        assert result["status"] == dict.fromkeys(names, 200), result["status"]
        assert result["slowest"] in names
        assert result["slowest_s"] == max(result["pages"].values())
