"""Fixtures for every test. (Helpers that tests import are in tests/helpers.py.)"""

from __future__ import annotations

import pytest

from engine.runtime.logs import configure


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    configure(level="warning", fmt="console")
