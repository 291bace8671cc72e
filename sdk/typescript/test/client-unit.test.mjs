// The client without a server: every method's request compared with what the official Python SDK
// sends for the same call (test/python/sdk_oracle.py captures it with httpx.MockTransport), the
// error mapping compared with yotel.errors._classify, and the 429 retry.

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";

import * as sdk from "../dist/index.js";
import { oracle, pythonMissing } from "./helpers/python.mjs";

const { Client, CONTROL_EVENTS, OPERATIONS } = sdk;
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const CALL = "3f0d6c5e-8a51-4f4b-9a2e-27b0d4a1c9e2";
const TOKEN = "yt_cb_01JT9Z7B2W4Q8C6H1R0S5M3N9K";

/** A fetch that records each request and answers from `reply(request)`. */
function recorder(reply = () => ({ status: 200, body: {} })) {
  const seen = [];
  const fetch = async (url, init) => {
    const u = new URL(url);
    const headers = new Headers(init.headers);
    const req = {
      method: init.method,
      path: u.pathname,
      query: Object.fromEntries(u.searchParams),
      authorization: headers.get("authorization"),
      idempotency_key: headers.get("idempotency-key"),
      contentType: headers.get("content-type"),
      body: init.body === undefined ? null : JSON.parse(init.body),
    };
    seen.push(req);
    const r = reply(req);
    const text = r.body === undefined ? "" : typeof r.body === "string" ? r.body : JSON.stringify(r.body);
    return new Response(r.status === 204 ? null : text, { status: r.status, headers: r.headers ?? {} });
  };
  return { seen, fetch };
}

function client(fetch, options = {}) {
  return new Client({ apiKey: "yt_live_oracle", baseUrl: "http://bridge.test", fetch, ...options });
}

// [python resource, python method, args, kwargs, (c) => the same call through this SDK]
const VERB_CASES = [
  ["transfer", [CALL], { destination_type: "agent_queue", destination: "tier1", metadata: { intent: "billing" } }],
  ["hangup", [CALL], { metadata: { reason: "task_complete" } }],
  ["hangup", [CALL], {}],
  ["log", [CALL], { metadata: { step: "intent_classified" } }],
  ["mute", [CALL], {}],
  ["mute", [CALL], { target: "agent" }],
  ["unmute", [CALL], { target: "caller" }],
  ["hold", [CALL], { moh_url: "https://cdn.example.com/moh.wav" }],
  ["hold", [CALL], {}],
  ["unhold", [CALL], {}],
  ["send_dtmf", [CALL], { digits: "1234#" }],
  ["play_audio", [CALL], { audio_url: "https://cdn.example.com/prompts/greeting.wav" }],
  ["play_audio", [CALL], { tts_text: "hello", voice: "en-IN" }],
  ["set_disposition", [CALL], { disposition: "interested", notes: "callback Tue 2pm" }],
  ["recording_pause", [CALL], { reason: "pci" }],
  ["recording_resume", [CALL], {}],
  ["get_call_state", [CALL], {}],
  ["conference_start", [CALL], {}],
  ["conference_add", [CALL], { participant_type: "agent", destination: "ag-7", metadata: { reason: "warm_handoff" } }],
  ["conference_remove", [CALL], { member_id: "mem-42" }],
  ["conference_leave", [CALL], {}],
  ["request_supervisor", [CALL], { reason: "Caller is angry", urgency: "high" }],
  ["request_supervisor", [CALL], { reason: "Caller is angry" }],
  ["whisper", [CALL], { target_call_id: "agent-call", audio_url: "https://cdn.example.com/coach/tip.wav" }],
  ["barge", [CALL], { target_call_id: "agent-call" }],
  ["monitor_start", [CALL], { target_call_id: "agent-call", mode: "listen_and_whisper" }],
  ["monitor_start", [CALL], { target_call_id: "agent-call" }],
  ["monitor_stop", [CALL], { target_call_id: "agent-call" }],
  ["set_lead_field", [CALL], { field: "preferred_callback_window", value: "weekday_evenings" }],
  ["set_lead_field", [CALL], { field: "budget", value: { amount: 1200 } }],
  ["set_lead_status", [CALL], { status: "qualified" }],
  ["schedule_callback", [CALL], { scheduled_at: "2026-05-03T14:00:00Z", reason: "callback requested", voice_agent_id: "va_2" }],
];

const camel = (s) => s.replace(/_([a-z])/g, (_m, c) => c.toUpperCase());

const RESOURCE_CASES = [
  ["voice_agents", "create", [], { name: "Sales Bot", ws_url: "wss://ai.example.com/ws" }, (c) => c.voiceAgents.create({ name: "Sales Bot", ws_url: "wss://ai.example.com/ws" })],
  ["voice_agents", "create", [], { name: "B", ws_url: "ws://x", max_concurrent: 3, token_lifetime: "ws_session", subprotocol: "audio.jambonz.org", auth_token: "s3cret" }, (c) => c.voiceAgents.create({ name: "B", ws_url: "ws://x", max_concurrent: 3, token_lifetime: "ws_session", subprotocol: "audio.jambonz.org", auth_token: "s3cret" })],
  ["voice_agents", "list", [], {}, (c) => c.voiceAgents.list()],
  ["voice_agents", "list", [], { status: "archived" }, (c) => c.voiceAgents.list({ status: "archived" })],
  ["voice_agents", "get", ["va_1"], {}, (c) => c.voiceAgents.get("va_1")],
  ["voice_agents", "update", ["va_1"], { max_concurrent: 20 }, (c) => c.voiceAgents.update("va_1", { max_concurrent: 20 })],
  ["voice_agents", "archive", ["va_1"], {}, (c) => c.voiceAgents.archive("va_1")],
  ["voice_agents", "delete", ["va_1"], {}, (c) => c.voiceAgents.delete("va_1")],
  ["voice_agents", "set_as_default", ["va_1"], {}, (c) => c.voiceAgents.setAsDefault("va_1")],
  ["voice_agents", "set_as_default", [null], {}, (c) => c.voiceAgents.setAsDefault(null)],
  ["voice_agents", "get_default", [], {}, (c) => c.voiceAgents.getDefault()],
  ["ai_sessions", "list", [], {}, (c) => c.aiSessions.list()],
  ["ai_sessions", "list", [], { voice_agent_id: "va_1", started_after: "2026-05-01T00:00:00Z", limit: 5 }, (c) => c.aiSessions.list({ voice_agent_id: "va_1", started_after: "2026-05-01T00:00:00Z", limit: 5 })],
  ["ai_sessions", "get", [CALL], {}, (c) => c.aiSessions.get(CALL)],
  ["ai_sessions", "control", [CALL, { event: "future_verb", x: 1 }], {}, (c) => c.aiSessions.control(CALL, { event: "future_verb", x: 1 })],
  ["campaigns", "list", [], {}, (c) => c.campaigns.list()],
  ["campaigns", "get", ["cmp_1"], {}, (c) => c.campaigns.get("cmp_1")],
  ["campaigns", "update", ["cmp_1"], { name: "Q4", description: null }, (c) => c.campaigns.update("cmp_1", { name: "Q4", description: null })],
  ["campaigns", "delete", ["cmp_1"], {}, (c) => c.campaigns.delete("cmp_1")],
  ["leads", "create", [], { campaign_id: "cmp_1", phone: "+919800000000", name: "Asha", metadata: { tier: "gold" } }, (c) => c.leads.create({ campaign_id: "cmp_1", phone: "+919800000000", name: "Asha", metadata: { tier: "gold" } })],
  ["leads", "bulk", [], { campaign_id: "cmp_1", leads: [{ phone: "+919800000000" }, { phone: "+919800000001", email: "a@b.c" }] }, (c) => c.leads.bulk({ campaign_id: "cmp_1", leads: [{ phone: "+919800000000" }, { phone: "+919800000001", email: "a@b.c" }] })],
  ["recordings", "get_signed_url", [CALL], {}, (c) => c.recordings.getSignedUrl(CALL)],
  ["recordings", "fetch_bytes", [CALL], {}, (c) => c.recordings.fetchBytes(CALL)],
];

function answerFor(req) {
  if (req.method === "DELETE") return { status: 204 };
  if (req.path.endsWith("/recording/audio")) return { status: 200, body: "RIFF" };
  if (req.path === "/api/v1/voice-agents" && req.method === "GET") return { status: 200, body: { items: [] } };
  return { status: 200, body: {} };
}

describe("requests are the Python SDK's", () => {
  test("every control verb: method, path, body, Authorization, Idempotency-Key", async (t) => {
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    const specs = VERB_CASES.map(([verb, args, kwargs]) => ["ai_sessions", verb, args, { ...kwargs, callback_token: TOKEN }]);
    const py = oracle({ requests: specs }).requests;
    const { seen, fetch } = recorder(answerFor);
    const c = client(fetch);
    for (const [verb, args, kwargs] of VERB_CASES) {
      await c.aiSessions[camel(verb)](...args, { ...kwargs, callbackToken: TOKEN });
    }
    assert.equal(seen.length, py.length);
    seen.forEach((ts, i) => {
      const p = py[i];
      const label = `${VERB_CASES[i][0]} ${JSON.stringify(VERB_CASES[i][2])}`;
      assert.equal(ts.method, p.method, label);
      assert.equal(ts.path, p.path, label);
      assert.deepEqual(ts.body, p.body, label);
      assert.equal(ts.authorization, `Bearer ${TOKEN}`, label);
      assert.equal(ts.authorization, p.authorization, label);
      assert.equal(ts.idempotency_key === null, p.idempotency_key === null, `${label}: key sent by one SDK only`);
      if (ts.idempotency_key !== null) {
        assert.match(ts.idempotency_key, UUID_V4, label);
        assert.match(p.idempotency_key, UUID_V4, label);
      }
    });
    const keyless = VERB_CASES.filter((_c, i) => seen[i].idempotency_key === null).map((c) => c[0]);
    assert.deepEqual([...new Set(keyless)], ["log", "get_call_state"]);
  });

  test("the other resources: method, path, query, body", async (t) => {
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    const py = oracle({ requests: RESOURCE_CASES.map(([r, m, a, k]) => [r, m, a, k]) }).requests;
    const { seen, fetch } = recorder(answerFor);
    const c = client(fetch);
    for (const rc of RESOURCE_CASES) await rc[4](c);
    assert.equal(seen.length, py.length);
    seen.forEach((ts, i) => {
      const label = `${RESOURCE_CASES[i][0]}.${RESOURCE_CASES[i][1]}`;
      assert.equal(ts.method, py[i].method, label);
      assert.equal(ts.path, py[i].path, label);
      assert.deepEqual(ts.query, py[i].query, label);
      assert.deepEqual(ts.body, py[i].body, label);
      assert.equal(ts.authorization, "Bearer yt_live_oracle", label);
      assert.equal(ts.authorization, py[i].authorization, label);
    });
  });

  test("campaigns.create: the Python SDK also sends its model's defaults, the server's own", async (t) => {
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    const [py] = oracle({ requests: [["campaigns", "create", [], { name: "Q4", dial_mode: "predictive" }]] }).requests;
    const { seen, fetch } = recorder();
    await client(fetch).campaigns.create({ name: "Q4", dial_mode: "predictive" });
    assert.equal(seen[0].path, py.path);
    assert.deepEqual(seen[0].body, { name: "Q4", dial_mode: "predictive" });
    for (const [k, v] of Object.entries(seen[0].body)) assert.deepEqual(py.body[k], v);
    // What only Python sends is CampaignCreate's defaults, which the server applies when absent
    // (the OpenAPI document's CampaignCreate carries the same defaults).
    assert.deepEqual(
      Object.keys(py.body).filter((k) => !(k in seen[0].body)).sort(),
      ["end_time", "max_attempts", "max_concurrent", "post_answer_action", "predictive_max_dial_ratio", "predictive_max_wait_s", "predictive_min_dial_ratio", "predictive_target_abandon", "predictive_wrap_up_s", "retry_delay_mins", "start_time", "timezone"],
    );
  });

  test("an explicit idempotencyKey is sent as is, log and get_call_state included", async () => {
    const { seen, fetch } = recorder();
    const c = client(fetch);
    await c.aiSessions.hangup(CALL, { idempotencyKey: "my-key-1" });
    await c.aiSessions.log(CALL, { metadata: { a: 1 }, idempotencyKey: "my-key-2" });
    await c.aiSessions.getCallState(CALL);
    assert.deepEqual(seen.map((r) => r.idempotency_key), ["my-key-1", "my-key-2", null]);
    assert.deepEqual(seen[1].body, { event: "log", metadata: { a: 1 } });
    assert.equal(seen[0].authorization, "Bearer yt_live_oracle");
  });

  test("each call makes a fresh UUID v4", async () => {
    const { seen, fetch } = recorder();
    const c = client(fetch);
    for (let i = 0; i < 20; i++) await c.aiSessions.sendDtmf(CALL, { digits: "1" });
    const keys = seen.map((r) => r.idempotency_key);
    keys.forEach((k) => assert.match(k, UUID_V4));
    assert.equal(new Set(keys).size, 20);
  });

  test("every verb of the document has its method; every operation used exists", () => {
    const c = client(recorder().fetch);
    assert.equal(CONTROL_EVENTS.length, 25);
    for (const event of CONTROL_EVENTS) assert.equal(typeof c.aiSessions[camel(event)], "function", event);
    assert.equal(OPERATIONS.post_ai_sessions_call_id_control.path, "/api/v1/ai-sessions/{call_id}/control");
  });

  test("recordings.download streams the bytes to a file", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "yotel-ts-"));
    try {
      const { fetch } = recorder(() => ({ status: 200, body: "RIFF....WAVE" }));
      const dest = path.join(dir, "a.wav");
      assert.equal(await client(fetch).recordings.download(CALL, dest), dest);
      assert.equal(await readFile(dest, "utf8"), "RIFF....WAVE");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("errors", () => {
  const CASES = [
    [400, "validation_error"], [400, "invalid_json"], [401, "invalid_token"], [403, "missing_scope"],
    [403, "conference_membership_required"], [404, "ai_session_not_found"], [409, "not_held"],
    [409, "ai_session_terminated"], [409, "voice_agent_in_use"], [413, "payload_too_large"],
    [422, "tts_not_supported"], [424, "no_voice_agent_configured"], [424, "subprotocol_mismatch"],
    [429, "rate_limited"], [429, "max_concurrent_exceeded"], [500, "internal_error"],
    [501, "verb_not_implemented"], [502, "switch_command_failed"], [503, "switch_unavailable"], [418, null],
  ];
  // Where the contract names a class the Python SDK does not use (it answers APIError there).
  const CONTRACT = {
    "400": "ValidationError",
    "500": "ServerError",
    "501": "ServerError",
    "502": "ServerError",
    "503": "ServerError",
  };
  const PY_NAMES = { PermissionError: "PermissionDenied", RateLimitError: "RateLimitedError" };

  test("the class for each status and code is yotel.errors._classify's (or the contract's)", async (t) => {
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    const py = oracle({ classify: CASES }).classify;
    CASES.forEach(([status, code], i) => {
      const err = sdk.classify({ status, detail: code ? { code, message: "m" } : { message: "m" }, responseText: "{}" });
      const want = CONTRACT[String(status)] ?? PY_NAMES[py[i].class] ?? py[i].class;
      if (!CONTRACT[String(status)]) assert.equal(err.constructor.name, want, `${status} ${code}`);
      else {
        assert.equal(py[i].class, "APIError", `${status}: Python's answer changed`);
        assert.equal(err.constructor.name, want, `${status} ${code}`);
      }
      if (py[i].retry_after !== null) assert.equal(err.retryAfterS, py[i].retry_after, `${status} ${code}`);
      assert.ok(err instanceof sdk.APIError && err instanceof sdk.YotelError && err instanceof Error);
      assert.equal(err.status, status);
      assert.equal(err.statusCode, status);
      assert.equal(err.code, code);
    });
  });

  test("the hierarchy and the Python names", () => {
    assert.equal(sdk.PermissionError, sdk.PermissionDenied);
    assert.equal(sdk.RateLimitError, sdk.RateLimitedError);
    assert.ok(new sdk.ConferenceMembershipRequired({ status: 403 }) instanceof sdk.PermissionDenied);
    assert.ok(new sdk.AISessionTerminated({ status: 409 }) instanceof sdk.ConflictError);
    assert.ok(new sdk.VoiceAgentInUse({ status: 409 }) instanceof sdk.ConflictError);
    assert.ok(new sdk.MaxConcurrentExceeded({ status: 429, retryAfterS: 5 }) instanceof sdk.RateLimitedError);
  });

  test("an answer becomes the error: detail, code, message, requestId, Retry-After, errors", async () => {
    const { fetch } = recorder((req) => {
      if (req.path.endsWith("/a")) {
        return { status: 502, body: { detail: { code: "switch_command_failed", message: "FreeSWITCH refused", request_id: "req_1" } }, headers: { "X-Request-Id": "req_1" } };
      }
      if (req.path.endsWith("/b")) {
        return { status: 429, body: { detail: { code: "rate_limited", message: "slow down", retry_after_s: 1 } }, headers: { "Retry-After": "7" } };
      }
      if (req.path.endsWith("/c")) {
        return { status: 400, body: { detail: { code: "validation_error", message: "bad", errors: [{ loc: ["digits"], msg: "x", type: "y" }] } } };
      }
      return { status: 503, body: "<html>bad gateway</html>" };
    });
    const c = client(fetch);
    const e1 = await c.request({ method: "GET", path: "/a" }).catch((e) => e);
    assert.ok(e1 instanceof sdk.ServerError);
    assert.equal(e1.requestId, "req_1");
    assert.equal(e1.message, "502 switch_command_failed: FreeSWITCH refused");
    assert.equal(e1.detailMessage, "FreeSWITCH refused");
    const e2 = await c.request({ method: "GET", path: "/b" }).catch((e) => e);
    assert.ok(e2 instanceof sdk.RateLimitedError);
    assert.equal(e2.retryAfterS, 7);
    assert.equal(e2.retryAfter, 7);
    const e3 = await c.request({ method: "GET", path: "/c" }).catch((e) => e);
    assert.ok(e3 instanceof sdk.ValidationError);
    assert.deepEqual(e3.errors, [{ loc: ["digits"], msg: "x", type: "y" }]);
    const e4 = await c.request({ method: "GET", path: "/d" }).catch((e) => e);
    assert.ok(e4 instanceof sdk.ServerError);
    assert.equal(e4.responseText, "<html>bad gateway</html>");
    assert.equal(e4.detail, null); // not JSON: no detail, the text is kept
  });

  test("apiKey must start with yt_, as in the Python SDK", () => {
    assert.throws(() => new Client({ apiKey: "sk_live_x" }), TypeError);
    assert.throws(() => new Client({}), TypeError);
    new Client({ apiKey: TOKEN });
  });
});

describe("429 retry", () => {
  function limited(n) {
    let calls = 0;
    return recorder(() => {
      calls++;
      if (calls <= n) return { status: 429, body: { detail: { code: "rate_limited", message: "slow" } }, headers: { "Retry-After": "1" } };
      return { status: 200, body: { ok: true, call_id: CALL, dispatched_at: "x", result: {} } };
    });
  }

  test("off by default: RateLimitedError with retryAfterS at once", async () => {
    const { seen, fetch } = limited(1);
    const err = await client(fetch).aiSessions.hangup(CALL).catch((e) => e);
    assert.ok(err instanceof sdk.RateLimitedError);
    assert.equal(err.retryAfterS, 1);
    assert.equal(seen.length, 1);
  });

  test("retryOn429: waits Retry-After, retries with the same Idempotency-Key", async () => {
    const { seen, fetch } = limited(1);
    const started = Date.now();
    const answer = await client(fetch, { retryOn429: true }).aiSessions.hangup(CALL);
    assert.equal(answer.ok, true);
    assert.ok(Date.now() - started >= 950, "slept Retry-After");
    assert.equal(seen.length, 2);
    assert.equal(seen[0].idempotency_key, seen[1].idempotency_key);
  });

  test("per request, and at most maxAttempts attempts", async () => {
    const { seen, fetch } = limited(5);
    const err = await client(fetch, { maxAttempts: 2 })
      .aiSessions.hangup(CALL, { retryOn429: true })
      .catch((e) => e);
    assert.ok(err instanceof sdk.RateLimitedError);
    assert.equal(seen.length, 2);
  });
});
