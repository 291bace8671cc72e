"""The OpenAPI document (bridge/api/openapi.py, served at GET /openapi.json): it documents every route
the app serves and nothing else, it is valid OpenAPI 3.1, and it says what the issue asks it to say
(the verb union on `event`, the error envelope on every error status, the two bearer schemes).
Whether the server keeps to it is tests/test_schemathesis.py's part."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from bridge.api.app import create_app
from bridge.api.openapi import OPERATIONS, build_document
from bridge.api.routes.openapi import served_routes
from bridge.services import Services
from bridge.verbs.models import VERB_NAMES
from tests.helpers import http

DOCUMENT = build_document()
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): op for path, item in document["paths"].items() for method, op in item.items()
    }


@pytest.fixture
async def services(settings, redis) -> AsyncIterator[Services]:
    svc = Services(settings, redis)
    try:
        yield svc
    finally:
        await svc.close()


@pytest.mark.parametrize("sandbox_mode", [True, False])
async def test_every_route_is_documented_and_every_operation_is_a_route(services, sandbox_mode):
    routes = served_routes(create_app(services, sandbox=sandbox_mode))
    documented = set(operations(build_document(routes)))
    assert routes - documented == set(), "routes missing from bridge/api/openapi.py OPERATIONS"
    assert documented - routes == set(), "documented operations the app does not route"
    assert any(path.startswith("/sandbox") for _, path in routes) is sandbox_mode
    if sandbox_mode:
        table = {(op.method, op.path) for op in OPERATIONS}
        assert table == routes, "OPERATIONS lists an operation no route serves (a typo in a path?)"


async def test_the_sandbox_serves_the_document_to_anyone(sandbox):
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{sandbox.info.base_url}/openapi.json") as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            served = await resp.json()
    # Exactly the document the schemathesis test was built from (every operation: sandbox mode).
    assert served == json.loads(json.dumps(DOCUMENT))


def test_the_document_is_valid_openapi_3_1():
    assert DOCUMENT["openapi"].startswith("3.1")
    errors = [str(e) for e in OPENAPI_31_VALIDATOR.iter_errors(json.loads(json.dumps(DOCUMENT)))]
    assert errors == []


def test_every_reference_resolves():
    text = json.dumps(DOCUMENT)
    refs = set(re.findall(r'"#/components/(schemas|headers)/([^"]+)"', text))
    missing = {(kind, name) for kind, name in refs if name not in DOCUMENT["components"][kind]}
    assert refs and missing == set()


def test_the_control_body_is_the_verb_union_discriminated_on_event():
    op = operations(DOCUMENT)[("POST", "/api/v1/ai-sessions/{call_id}/control")]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    union = DOCUMENT["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert union["discriminator"]["propertyName"] == "event"
    mapping = union["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(VERB_NAMES) and len(VERB_NAMES) == 25
    assert sorted(m["$ref"] for m in union["oneOf"]) == sorted(mapping.values())
    for verb, ref in mapping.items():
        model = DOCUMENT["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert model["properties"]["event"]["const"] == verb
        assert "event" in model["required"]
        assert model["additionalProperties"] is False


def test_every_error_status_answers_the_envelope():
    for (method, path), op in operations(DOCUMENT).items():
        for status, answer in op["responses"].items():
            if int(status) < 400 or (path == "/healthz" and status == "503"):
                continue
            schema = answer["content"]["application/json"]["schema"]
            assert schema == ERROR_REF, (method, path, status)
            assert "X-Request-Id" in answer["headers"], (method, path, status)
    detail = DOCUMENT["components"]["schemas"]["ErrorDetail"]
    assert {"code", "message"} <= set(detail["required"])


def test_every_operation_lists_the_errors_every_route_can_answer():
    for (method, path), op in operations(DOCUMENT).items():
        statuses = set(op["responses"])
        assert {"400", "431"} <= statuses, (method, path)
        if op["security"] and {} not in op["security"]:
            assert {"401", "403", "503"} <= statuses, (method, path)
        if "requestBody" in op:
            assert {"400", "413"} <= statuses, (method, path)


def test_security_schemes_and_who_may_call_what():
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes["ApiKey"]["scheme"] == schemes["CallbackToken"]["scheme"] == "bearer"
    assert "yt_live_" in schemes["ApiKey"]["bearerFormat"]
    assert "yt_cb_" in schemes["CallbackToken"]["bearerFormat"]
    ops = operations(DOCUMENT)
    for key, op in ops.items():
        takes_token = {"CallbackToken": []} in op["security"]
        assert takes_token is (key == ("POST", "/api/v1/ai-sessions/{call_id}/control")), key
    for public in [("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/console")]:
        assert ops[public]["security"] == []
    assert ops[("GET", "/api/v1/voice-agents")]["security"] == [{"ApiKey": []}]


def test_path_parameters_are_declared():
    for (method, path), op in operations(DOCUMENT).items():
        in_path = set(re.findall(r"{(\w+)}", path))
        declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        assert in_path == declared, (method, path)


def test_request_and_answer_models_come_from_pydantic():
    schemas = DOCUMENT["components"]["schemas"]
    ops = operations(DOCUMENT)
    create = ops[("POST", "/api/v1/voice-agents")]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/VoiceAgentCreate"
    }
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/VoiceAgent"
    }
    assert schemas["CallCreate"]["properties"]["from"]["pattern"].startswith("^\\+")
    assert "voice_agent_id" in schemas["SetDefaultVoiceAgent"]["required"]


async def test_default_voice_agent_is_not_taken_for_an_id(sandbox):
    """/voice-agents/default has GET and POST; {va_id}'s PATCH and DELETE must not match it (the
    405's Allow listed them, against the document, and DELETE /default deleted an agent "default")."""
    reply = await http(sandbox, "DELETE", "/api/v1/voice-agents/default")
    assert (reply.status, reply.code) == (405, "method_not_allowed")
    assert set(reply.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    assert (await http(sandbox, "GET", "/api/v1/voice-agents/default")).status == 200
    missing = await http(sandbox, "GET", "/api/v1/voice-agents/va_unknown")
    assert (missing.status, missing.code) == (404, "voice_agent_not_found")
