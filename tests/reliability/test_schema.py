"""Every operation of the orchestrator's OpenAPI document, driven by schemathesis with all of
its checks against the running stack: no 500, no response outside the schema, invalid input
refused and valid input accepted."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from orchestrator.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def api_schema(stack: Settings) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{stack.port}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_contract(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(timeout=120)
