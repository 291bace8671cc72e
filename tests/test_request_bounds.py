"""Issue 13, finding 5: no request the parser accepts is a 500, and none the parser refuses leaves
the error envelope.

- the JSON body is parsed with a depth bound and a size bound (bridge/api/body.py);
- a string that cannot be encoded (a lone surrogate, from a `\\ud800` escape or from bytes that are
  not UTF-8 in a header) is refused before any route sees it;
- aiohttp's own refusals (a malformed request line, oversized or malformed headers, a body over
  the limit) come back as `{"detail": {"code", "message"}}` (bridge/api/server.py), sent here as
  raw bytes over a socket since no HTTP client would send them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from bridge.api import body as body_mod
from bridge.api.app import MAX_BODY_BYTES
from bridge.errors import ApiError
from tests.conftest import AgentServer, in_thread
from tests.helpers import http, sdk, start_call

DEEP = b'{"a":' * 3000 + b"1" + b"}" * 3000


# ---------------------------------------------------------------- the body parser on its own


def test_nesting_at_the_bound_parses_and_one_deeper_is_a_validation_error():
    depth = body_mod.MAX_DEPTH
    at_bound = "[" * (depth - 2) + "{}" + "]" * (depth - 2)
    assert body_mod.parse_json_object(('{"a":' + at_bound + "}").encode()) == {"a": json.loads(at_bound)}
    too_deep = b'{"a":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(ApiError) as exc:
        body_mod.parse_json_object(too_deep)
    assert (exc.value.status, exc.value.code) == (400, "validation_error")
    assert str(depth) in exc.value.message


@pytest.mark.parametrize(
    "raw",
    [
        # Brackets inside strings do not count towards the depth.
        b'{"a": "' + b"[{" * 5000 + b'"}',
        b'{"a": "\\"[[[[", "b": [1, [2, [3]]]}',
    ],
)
def test_brackets_inside_strings_are_not_nesting(raw: bytes):
    assert isinstance(body_mod.parse_json_object(raw), dict)


def test_thousands_of_levels_are_a_validation_error_not_a_recursion_error():
    with pytest.raises(ApiError) as exc:
        body_mod.parse_json_object(DEEP)
    assert (exc.value.status, exc.value.code) == (400, "validation_error")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"voice_agent_id": "\\ud800"}',
        b'{"voice_agent_id": "ok \\udfff tail"}',
        b'{"\\ud83d": 1}',  # in a key
        b'{"a": [{"b": ["\\ud800"]}]}',  # nested
    ],
)
def test_a_lone_surrogate_anywhere_is_a_validation_error(raw: bytes):
    with pytest.raises(ApiError) as exc:
        body_mod.parse_json_object(raw)
    assert (exc.value.status, exc.value.code) == (400, "validation_error")


def test_a_surrogate_pair_is_a_character_and_is_accepted():
    assert body_mod.parse_json_object(b'{"name": "\\ud83d\\ude00"}') == {"name": "\U0001f600"}


@pytest.mark.parametrize("raw", [b'{"a": "\xed\xa0\x80"}', b'{"a": "\xff"}', b"\xff\xfe{\x00}\x00"])
def test_a_body_that_is_not_utf8_is_invalid_json(raw: bytes):
    with pytest.raises(ApiError) as exc:
        body_mod.parse_json_object(raw)
    assert (exc.value.status, exc.value.code) == (400, "invalid_json")


@pytest.mark.parametrize("raw", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}'])
def test_non_standard_constants_are_invalid_json(raw: bytes):
    with pytest.raises(ApiError) as exc:
        body_mod.parse_json_object(raw)
    assert (exc.value.status, exc.value.code) == (400, "invalid_json")


# ---------------------------------------------------------------- over HTTP, on every JSON route


async def _json_routes(sandbox: Any, agent_server: AgentServer) -> list[tuple[str, str]]:
    """Every route that takes a JSON body, with real ids in its path, so each reaches its body."""
    client = sdk(sandbox)
    call = await start_call(sandbox, agent_server)
    agent_id = (await in_thread(client.voice_agents.get_default)) or ""
    campaign = await http(sandbox, "POST", "/api/v1/campaigns", {"name": "c"})
    assert campaign.status == 201, campaign.body
    hook = await http(
        sandbox,
        "POST",
        "/api/v1/webhooks",
        {"url": agent_server.url.replace("ws://", "http://"), "event_types": ["ai_session.ended"]},
    )
    assert hook.status == 201, hook.body
    cid, sid = campaign.body["id"], hook.body["id"]
    return [
        ("POST", "/api/v1/voice-agents"),
        ("PATCH", f"/api/v1/voice-agents/{agent_id}"),
        ("POST", "/api/v1/voice-agents/default"),
        ("POST", "/api/v1/calls"),
        ("POST", f"/api/v1/ai-sessions/{call.call_id}/control"),
        ("POST", f"/api/v1/ai-sessions/{call.call_id}/revoke_token"),
        ("POST", "/api/v1/webhooks"),
        ("PATCH", f"/api/v1/webhooks/{sid}"),
        ("POST", "/api/v1/campaigns"),
        ("POST", f"/api/v1/campaigns/{cid}/leads"),
        ("POST", "/api/v1/escalations/esc_x/claim"),
        ("POST", "/sandbox/calls"),
    ]


async def test_a_deeply_nested_body_is_400_on_every_json_route(sandbox, agent_server: AgentServer):
    routes = await _json_routes(sandbox, agent_server)
    answers = {}
    for method, path in routes:
        reply = await http(sandbox, method, path, raw=DEEP, headers={"Content-Type": "application/json"})
        answers[(method, path)] = (reply.status, reply.code)
    assert all(a == (400, "validation_error") for a in answers.values()), answers


# A body each route would accept, but for one string holding a lone surrogate: `S` becomes the
# JSON escape `\\ud800`, which json.loads turns into a str that cannot be encoded as UTF-8.
S = "<S>"
SURROGATE_BODIES: list[dict[str, Any]] = [
    {"name": f"bot {S}", "ws_url": "ws://127.0.0.1:9/ws"},  # POST voice-agents
    {"name": f"bot {S}"},  # PATCH voice-agents/{id}
    {"voice_agent_id": S},  # POST voice-agents/default
    {"to": "+14155550123", "from": "+14155550100", "lead_id": f"l{S}"},  # POST calls
    {"event": "log", "metadata": {"note": S}},  # control
    {"token": f"yt_cb_{S}"},  # revoke_token
    {
        "url": "http://127.0.0.1:9/h",
        "event_types": ["ai_session.ended"],
        "test_url": f"http://127.0.0.1:9/{S}",
    },
    {"test_url": f"http://127.0.0.1:9/{S}"},  # PATCH webhooks/{id}
    {"name": f"c {S}"},  # POST campaigns
    {"phone": "+14155550123", "name": f"n {S}"},  # POST campaigns/{id}/leads
    {"supervisor_id": f"s{S}"},  # claim
    {"from": "+14155550100", "to": "+14155550199", "lead_id": f"l{S}"},  # POST sandbox/calls
]


def _with_surrogate(body: dict[str, Any]) -> bytes:
    return json.dumps(body).replace(S, "\\ud800").encode()


async def test_a_lone_surrogate_is_400_on_every_json_route(sandbox, agent_server: AgentServer):
    routes = await _json_routes(sandbox, agent_server)
    assert len(routes) == len(SURROGATE_BODIES)
    answers = {}
    for (method, path), body in zip(routes, SURROGATE_BODIES, strict=True):
        raw = _with_surrogate(body)
        reply = await http(sandbox, method, path, raw=raw, headers={"Content-Type": "application/json"})
        answers[(method, path)] = (reply.status, reply.code)
    assert all(a == (400, "validation_error") for a in answers.values()), answers


async def test_set_default_with_a_lone_surrogate_is_400_and_changes_nothing(sandbox):
    before = await http(sandbox, "GET", "/api/v1/voice-agents/default")
    reply = await http(sandbox, "POST", "/api/v1/voice-agents/default", raw=b'{"voice_agent_id": "\\ud800"}')
    assert (reply.status, reply.code) == (400, "validation_error"), reply.body
    after = await http(sandbox, "GET", "/api/v1/voice-agents/default")
    assert after.body == before.body


async def test_a_body_over_the_limit_is_413_in_the_envelope(sandbox):
    reply = await http(sandbox, "POST", "/api/v1/voice-agents", raw=b" " * (MAX_BODY_BYTES + 1))
    assert (reply.status, reply.code) == (413, "payload_too_large"), reply.body


async def test_a_chunked_body_over_the_limit_is_413_in_the_envelope(sandbox):
    """No Content-Length to judge by: aiohttp's reader refuses it once it has read too much."""

    async def chunks():
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b" " * 4096

    headers = {"Authorization": f"Bearer {sandbox.info.admin_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as client:
        url = f"{sandbox.info.base_url}/api/v1/voice-agents"
        async with client.post(url, data=chunks(), headers=headers) as resp:
            body = await resp.json()
    assert (resp.status, body["detail"]["code"]) == (413, "payload_too_large"), body


# ---------------------------------------------------------------- raw sockets: what aiohttp refuses


async def raw_exchange(sandbox: Any, data: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; the status, headers (lower-case names) and body of the answer."""
    host, port = sandbox.info.base_url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        payload = await asyncio.wait_for(reader.readexactly(length), timeout)
        return status, headers, payload
    finally:
        writer.close()


def _request(sandbox: Any, *, line: bytes = b"GET /healthz HTTP/1.1", headers: bytes = b"") -> bytes:
    return line + b"\r\nHost: bridge\r\nConnection: close\r\n" + headers + b"\r\n"


MALFORMED = {
    "garbage request line": (b"GARBAGE\r\n\r\n", 400, "bad_request"),
    "bad method": (b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    "control character in a header": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Thing: a\x01b\r\n\r\n",
        400,
        "bad_request",
    ),
    "NUL in a header": (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Thing: a\x00b\r\n\r\n", 400, "bad_request"),
    "malformed Content-Length": (
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 12a\r\n\r\n",
        400,
        "bad_request",
    ),
    "oversized header": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
        431,
        "request_header_fields_too_large",
    ),
    "too many headers": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: a\r\n" % i for i in range(300)) + b"\r\n",
        431,
        "request_header_fields_too_large",
    ),
    "oversized request line": (
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        431,
        "request_header_fields_too_large",
    ),
}


async def test_what_aiohttp_refuses_comes_back_in_the_envelope(sandbox):
    answers = {}
    for name, (data, status, code) in MALFORMED.items():
        got_status, headers, payload = await raw_exchange(sandbox, data)
        assert headers.get("content-type", "").startswith("application/json"), (name, headers, payload)
        body = json.loads(payload)
        answers[name] = (got_status, body["detail"]["code"])
        assert set(body["detail"]) >= {"code", "message"}, (name, body)
        assert headers.get("x-request-id", "").startswith("req_"), (name, headers)
        assert (got_status, body["detail"]["code"]) == (status, code), (name, body)


async def test_a_declared_length_over_the_limit_is_413_at_once(sandbox):
    """No body is sent: the answer must not wait for the 1 GB the client announced."""
    data = (
        b"POST /api/v1/voice-agents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + sandbox.info.admin_key.encode() + b"\r\n"
        b"Content-Length: 1000000000\r\n\r\n"
    )
    status, headers, payload = await raw_exchange(sandbox, data, timeout=2.0)
    assert status == 413 and json.loads(payload)["detail"]["code"] == "payload_too_large"
    assert headers.get("connection", "").lower() == "close"


async def test_a_header_that_is_not_utf8_is_400_not_500(sandbox):
    for header in (b"Authorization: Bearer yt_live_\xed\xa0\x80", b"Idempotency-Key: k\xff"):
        data = _request(sandbox, line=b"GET /api/v1/voice-agents HTTP/1.1", headers=header + b"\r\n")
        status, _, payload = await raw_exchange(sandbox, data)
        body = json.loads(payload)
        assert (status, body["detail"]["code"]) == (400, "validation_error"), (header, body)


async def test_a_client_request_id_is_echoed_only_when_plain(sandbox):
    plain = await http(sandbox, "GET", "/healthz", headers={"X-Request-Id": "trace-1.a:b_c"})
    assert plain.headers["X-Request-Id"] == "trace-1.a:b_c"
    for odd in ("two words", "x" * 129, "é"):
        reply = await http(sandbox, "GET", "/healthz", headers={"X-Request-Id": odd})
        assert reply.headers["X-Request-Id"].startswith("req_"), odd


async def test_console_assets_load_and_a_missing_one_is_a_404_in_the_envelope(sandbox):
    for name, kind in (("console.css", "text/css"), ("console.js", "javascript")):
        reply = await http(sandbox, "GET", f"/console/assets/{name}")
        assert reply.status == 200 and kind in reply.headers["Content-Type"], name
    for missing in ("nope.css", "console.html", "..%2Fconsole.html"):
        reply = await http(sandbox, "GET", f"/console/assets/{missing}")
        assert (reply.status, reply.code) == (404, "not_found"), missing


async def test_a_lone_surrogate_in_a_supervisor_hello_is_an_invalid_hello(sandbox):
    """The WebSocket's frames do not go through bridge/api/body.py; its hello model refuses such a
    name itself (pydantic rejects a lone surrogate in a length-constrained str, not in a bare one:
    that is why `voice_agent_id: str | None` let one through to Redis). A guard, not a reproduction."""
    hello = json.dumps(
        {"type": "hello", "api_key": sandbox.info.admin_key, "supervisor_id": "sup-1", "name": "<S>"}
    ).replace("<S>", "\\ud800")
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(f"{sandbox.info.base_url}/api/v1/supervisors/ws") as ws:
            await ws.send_str(hello)
            frame = (await ws.receive(timeout=5)).json()
            await ws.receive(timeout=5)
            assert (frame["code"], ws.close_code) == ("invalid_hello", 4400), frame
    listed = await http(sandbox, "GET", "/api/v1/supervisors")
    assert listed.body["items"] == []
