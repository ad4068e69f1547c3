"""Every operation of the orchestrator's OpenAPI document, driven by schemathesis with all of
its checks against the running stack: no 500, no response outside the schema, invalid input
refused and valid input accepted."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from orchestrator.settings import Settings

pytestmark = pytest.mark.integration
EXAMPLES = 20  # per operation
# Where a schema-valid request may still be refused, by what no schema can say: a file's
# bytes must be a supported type (415), a chat must end with the user's message (422), and
# `dimensions` must be the served model's own (422).
NOT_FROM_THE_SCHEMA = {
    "POST /v1/collections/{collection}/documents",
    "POST /v1/chat/completions",
    "POST /v1/embeddings",
}


def test_every_operation_keeps_its_contract(stack: Settings) -> None:
    # Driven by hand: schemathesis' pytest plugin does not load under pytest 9.
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{stack.port}/openapi.json")
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case[Any]) -> None:
            excluded = (
                [positive_data_acceptance] if case.operation.label in NOT_FROM_THE_SCHEMA else []
            )
            case.call_and_validate(timeout=120, excluded_checks=excluded)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # collect all, then report them all
            failures.append(f"{operation.label}: {exc}")
    assert len(operations) >= 15
    assert not failures, "\n\n".join(failures)
