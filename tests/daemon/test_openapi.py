"""The OpenAPI document (GET /openapi.json) against the app's routes, and schemathesis
fuzzing every operation of a live daemon against the document."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from engine.api.app import make_app
from engine.api.openapi import document
from engine.api.ratelimit import Failures
from engine.clock import VirtualClock
from engine.daemon import Daemon

from . import fuzz
from .helpers import RECEIPT_CHANNELS, START, TRACKING, Client, make_config

# Cases per operation, mode and credentials: ~1,200 requests in ~20 s, the same every run
# (KASKAD_FUZZ_EXAMPLES=200 for a longer search).
EXAMPLES = int(os.environ.get("KASKAD_FUZZ_EXAMPLES", "20"))


@pytest.fixture
async def daemon(tmp_path: Path, rules_dir: Path) -> AsyncIterator[Client]:
    """A daemon whose receipt channels are set up, so callbacks reach their handlers."""
    config = make_config(tmp_path, rules_dir, extra=TRACKING + RECEIPT_CHANNELS)
    daemon = Daemon(config, VirtualClock(START), background=False)
    await daemon.start()
    # The cases send wrong tokens by the hundred from one address, and the virtual clock
    # stands still: with the usual limit of 5 a minute, all after the first few would get
    # 429 (documented, tested in test_dashboard_actions.py) and reach no handler.
    daemon.state.auth_failures = Failures(limit=1_000_000)
    async with aiohttp.ClientSession() as session:
        yield Client(daemon, session)
    await daemon.stop()


def _documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method != "parameters"
    }


async def test_every_route_is_documented_and_every_documented_path_exists(
    client: Client,
) -> None:
    routes = {
        (route.method, route.resource.canonical)
        for route in make_app(client.daemon.state).router.routes()
        if route.method != "HEAD" and route.resource is not None  # HEAD: aiohttp's, per GET
    }
    assert routes == _documented()


async def test_the_document_is_served_without_auth_and_is_openapi_3_1(client: Client) -> None:
    status, served = await client.request("GET", "/openapi.json")
    assert status == 200 and served == document()
    assert served["openapi"] == "3.1.0"
    for schema in served["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    schemes = served["components"]["securitySchemes"]
    assert {"ingestBearer", "ingestSignature", "ingestTimestamp", "adminBearer"} <= set(schemes)
    error = served["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["code", "message", "details"]


async def test_fuzz_every_operation_against_the_document(daemon: Client) -> None:
    """No answer >= 500, and every answer as documented (status, content type, schema):
    schemathesis cases, some made hostile (fuzz.HOSTILE), signed validly or not at all."""
    loop = asyncio.get_running_loop()

    def pump() -> None:
        asyncio.run_coroutine_threadsafe(daemon.daemon.pump(), loop).result(timeout=30)

    secrets = fuzz.Secrets(
        ingest_token="ingest-token",
        admin_token="admin-token",
        ingest_hmac="hmac-secret",
        whatsapp_app_secret="s3cret",
        twilio_token="tw-token",
        public_url="https://kaskad.example/",
        now=daemon.daemon.clock.now,
    )
    report = await asyncio.to_thread(
        fuzz.run, document(), daemon.base, secrets, pump=pump, examples=EXAMPLES
    )
    if os.environ.get("KASKAD_FUZZ_REPORT"):  # every status per operation, for humans
        print(report.summary(statuses=True))
    assert report.requests > 1000
    assert not report.server_errors and not report.failures, report.summary()
