// The error classes, each from a real answer of a running `bridge sandbox`: status, detail.code,
// message, requestId (X-Request-Id), and for 429 retryAfterS from Retry-After.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import * as sdk from "../dist/index.js";
import { CALLER, DIALED, startAll } from "./helpers/sandbox.mjs";

let env;
let sandbox;
let agent;
let ai;

before(async () => {
  env = await startAll();
  ({ sandbox, agent } = env);
  ai = sandbox.client.aiSessions;
});
afterEach(async () => {
  await sandbox.endCalls();
});
after(async () => {
  await env?.stop();
});

/** Assert `promise` rejects with `Class` (exactly), status and code; returns the error. */
async function refused(promise, Class, status, code) {
  const err = await promise.then(
    (v) => assert.fail(`expected ${Class.name}, got ${JSON.stringify(v)}`),
    (e) => e,
  );
  assert.equal(err.constructor, Class, `${err.constructor.name}: ${err.message}`);
  assert.ok(err instanceof sdk.APIError && err instanceof sdk.YotelError);
  assert.equal(err.status, status);
  if (code !== undefined) assert.equal(err.code, code, err.message);
  assert.match(err.requestId ?? "", /^req_/, "every answer has an X-Request-Id");
  assert.equal(typeof err.detailMessage, "string");
  return err;
}

describe("error classes from the sandbox", () => {
  test("NoVoiceAgentConfigured: 424 when nothing resolves a voice agent", async () => {
    const saved = await sandbox.client.voiceAgents.getDefault();
    await sandbox.client.voiceAgents.setAsDefault(null);
    try {
      await refused(sandbox.client.calls.create({ to: DIALED, from: CALLER }), sdk.NoVoiceAgentConfigured, 424, "no_voice_agent_configured");
    } finally {
      if (saved) await sandbox.client.voiceAgents.setAsDefault(saved);
    }
  });

  test("ValidationError: 400 validation_error with errors[], 422 tts_not_supported", async () => {
    const call = await sandbox.startCall(agent);
    const bad = await refused(ai.sendDtmf(call.callId, { digits: "not digits", callbackToken: call.token }), sdk.ValidationError, 400, "validation_error");
    assert.ok(bad.errors.length > 0);
    assert.deepEqual(bad.errors[0].loc.at(-1), "digits");
    await refused(ai.playAudio(call.callId, { tts_text: "hello", callbackToken: call.token }), sdk.ValidationError, 422, "tts_not_supported");
    const both = await refused(
      ai.playAudio(call.callId, { tts_text: "hello", audio_url: "https://cdn.example.com/a.wav", callbackToken: call.token }),
      sdk.ValidationError,
      400,
      "validation_error",
    );
    assert.ok(both.errors.length > 0);
  });

  test("AuthenticationError: 401 for an unknown callback token and an unknown key", async () => {
    const call = await sandbox.startCall(agent);
    await refused(ai.getCallState(call.callId, { callbackToken: "yt_cb_01JT9Z7B2W4Q8C6H1R0S5M3N9K" }), sdk.AuthenticationError, 401);
    const stranger = sandbox.sdk({ apiKey: "yt_live_not_a_key_of_this_bridge" });
    await refused(stranger.voiceAgents.list(), sdk.AuthenticationError, 401, "invalid_api_key");
  });

  test("PermissionDenied: 403 for one call's token on another call", async () => {
    const a = await sandbox.startCall(agent);
    const b = await sandbox.startCall(agent);
    const err = await refused(ai.hold(b.callId, { callbackToken: a.token }), sdk.PermissionDenied, 403, "token_call_mismatch");
    assert.ok(err instanceof sdk.PermissionError);
  });

  test("ConferenceMembershipRequired: 403 whisper to a call the AI has no relation to", async () => {
    const a = await sandbox.startCall(agent);
    const b = await sandbox.startCall(agent);
    const err = await refused(
      ai.whisper(a.callId, { target_call_id: b.callId, audio_url: "https://cdn.example.com/tip.wav", callbackToken: a.token }),
      sdk.ConferenceMembershipRequired,
      403,
      "conference_membership_required",
    );
    assert.ok(err instanceof sdk.PermissionDenied);
  });

  test("NotFoundError: 404 for an unknown voice agent and an unknown session", async () => {
    await refused(sandbox.client.voiceAgents.get("va_00000000000000000000000000"), sdk.NotFoundError, 404);
    await refused(ai.getCallState("00000000-0000-4000-8000-000000000000"), sdk.NotFoundError, 404, "ai_session_not_found");
  });

  test("ConflictError: 409 unhold when not on hold", async () => {
    const call = await sandbox.startCall(agent);
    await refused(ai.unhold(call.callId, { callbackToken: call.token }), sdk.ConflictError, 409, "not_held");
  });

  test("AISessionTerminated: 409 once the session has ended", async () => {
    const call = await sandbox.startCall(agent);
    await ai.hangup(call.callId, { callbackToken: call.token });
    const err = await refused(ai.hangup(call.callId, { callbackToken: call.token }), sdk.AISessionTerminated, 409, "ai_session_terminated");
    assert.ok(err instanceof sdk.ConflictError);
  });

  test("VoiceAgentInUse: 409 deleting the agent a live call uses", async () => {
    const call = await sandbox.startCall(agent);
    const err = await refused(sandbox.client.voiceAgents.delete(call.metadata.voice_agent_id), sdk.VoiceAgentInUse, 409, "voice_agent_in_use");
    assert.ok(err instanceof sdk.ConflictError);
  });

  test("MaxConcurrentExceeded: 429 over an agent's max_concurrent, retryAfterS 5", async () => {
    const one = await sandbox.client.voiceAgents.create({ name: "solo", ws_url: agent.url, max_concurrent: 1 });
    const first = await sandbox.client.calls.create({ to: DIALED, from: CALLER, voice_agent_id: one.id });
    sandbox.live.push(first.call_id);
    const err = await refused(
      sandbox.client.calls.create({ to: DIALED, from: CALLER, voice_agent_id: one.id }),
      sdk.MaxConcurrentExceeded,
      429,
      "max_concurrent_exceeded",
    );
    assert.equal(err.retryAfterS, 5);
    assert.equal(err.headers.get("retry-after"), "5");
    assert.ok(err instanceof sdk.RateLimitedError);
  });

  test("RateLimitedError: 429 rate_limited past 10 requests a second on one call, retryAfterS from Retry-After", async () => {
    const call = await sandbox.startCall(agent);
    const answers = await Promise.allSettled(
      Array.from({ length: 16 }, () => ai.getCallState(call.callId, { callbackToken: call.token })),
    );
    const limited = answers.filter((a) => a.status === "rejected").map((a) => a.reason);
    assert.ok(limited.length >= 1, "16 requests at once: some are over 10 a second");
    for (const err of limited) {
      assert.equal(err.constructor, sdk.RateLimitedError, err.message);
      assert.equal(err.code, "rate_limited");
      assert.ok(Number.isInteger(err.retryAfterS) && err.retryAfterS >= 1, String(err.retryAfterS));
      assert.equal(String(err.retryAfterS), err.headers.get("retry-after"));
      assert.equal(err.detail.retry_after_s, err.retryAfterS);
    }
  });

  test("retryOn429: a limited request waits Retry-After and goes through", async () => {
    const call = await sandbox.startCall(agent);
    const statuses = [];
    const client = sandbox.sdk({
      fetch: async (url, init) => {
        const res = await fetch(url, init);
        statuses.push(res.status);
        return res;
      },
    });
    await Promise.allSettled(Array.from({ length: 12 }, () => ai.getCallState(call.callId, { callbackToken: call.token })));
    const started = Date.now();
    const answer = await client.aiSessions.hold(call.callId, { callbackToken: call.token, retryOn429: true });
    assert.equal(answer.ok, true);
    assert.equal(statuses[0], 429, "the hold was limited first");
    assert.equal(statuses.at(-1), 200);
    assert.ok(Date.now() - started >= 950, "it waited Retry-After (at least 1 s)");
    assert.equal((await sandbox.channel(call.callId)).held, true);
  });

  test("ServerError: 502 switch_command_failed with the request id, when the switch refuses", async () => {
    const call = await sandbox.startCall(agent);
    const { recording } = await sandbox.channel(call.callId);
    // Stop the recording behind the bridge's back: its `uuid_record … mask` is then refused.
    assert.match(await sandbox.eslApi(`uuid_record ${call.callId} stop ${recording.path}`), /^\+OK/);
    const err = await refused(ai.recordingPause(call.callId, { callbackToken: call.token }), sdk.ServerError, 502, "switch_command_failed");
    assert.equal(err.requestId, err.detail.request_id);
    assert.equal(err.requestId, err.headers.get("x-request-id"));
  });
});
