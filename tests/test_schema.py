"""Schema-driven fuzzing of the JSON API with schemathesis, against the WSGI app on a real workspace.

Cases are generated from /api/openapi.json, valid and invalid, with a valid write token and with
none. Every answer must be below 500 and conform to the document: its status code is documented,
its content type and body match the schema. ``RECSYS_SCHEMA_EXAMPLES`` sets the cases per operation
and mode (CI keeps it small; the closing note's long run sets it high); the totals land in
``artifacts/schemathesis-<database>.json``.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import bearer, copy_home, make_token, save_figures, settings_for
from web import create_app
from web.openapi import document

EXAMPLES = int(os.environ.get("RECSYS_SCHEMA_EXAMPLES", "25"))
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("RECSYS_SCHEMA_RANDOM") is None,
)
TALLY: Counter = Counter()


@pytest.fixture(scope="module")
def app(tmp_path_factory, embedded_home):
    home = copy_home(embedded_home, tmp_path_factory.mktemp("schema") / "home")
    limits = {"limit_api_writes": "1000000 per minute", "limit_uploads": "1000000 per minute"}
    app = create_app({"RECSYS_SETTINGS": settings_for(home, **limits), "TESTING": True})
    app.config["AUTH"] = bearer(make_token(home, "write"))
    yield app
    app.extensions["recsys"].workspace.close()
    save_figures("schemathesis", {"examples_per_operation": EXAMPLES, **dict(sorted(TALLY.items()))})


# The document is static, so it is loaded here and each call is sent to the app under test
# (schemathesis's lazy fixture loader does not run on pytest 9).
schema = schemathesis.openapi.from_dict(document())


def test_the_served_document_is_the_one_fuzzed(app):
    assert app.test_client().get("/api/openapi.json").get_json() == document()


def _record(response, with_token: bool) -> None:
    TALLY["requests"] += 1
    TALLY[f"status_{response.status_code}"] += 1
    TALLY["5xx"] += response.status_code >= 500
    TALLY["with_token" if with_token else "without_token"] += 1


@schema.parametrize()
@SETTINGS
def test_api_with_a_valid_token_answers_within_its_schema(case, app):
    response = case.call_and_validate(app=app, headers=app.config["AUTH"], checks=CHECKS)
    _record(response, True)


@schema.parametrize()
@SETTINGS
def test_api_without_a_token_refuses_within_its_schema(case, app):
    response = case.call_and_validate(app=app, checks=CHECKS)
    _record(response, False)
    method, documented = case.method.upper(), case.operation.method.upper()
    if method == "OPTIONS":  # Flask answers it with the Allow header; no data either way
        assert response.status_code in (200, 401, 405)
    elif method != documented and not (method == "HEAD" and documented == "GET"):
        assert response.status_code == 405, (method, case.operation.path, response.status_code)
    elif case.operation.path not in ("/api/health", "/api/openapi.json"):
        unrouted = response.status_code == 404 and "URL was not found" in response.json()["message"]
        assert response.status_code == 401 or unrouted, (case.formatted_path, response.status_code)
