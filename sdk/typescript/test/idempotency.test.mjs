// Idempotency-Key against a running `bridge sandbox`: a replay with the same key answers the stored
// response with `Idempotent-Replayed: true` and runs nothing again; the keys the SDK makes are UUID
// v4, fresh per call and kept across a 429 retry.

import assert from "node:assert/strict";
import { after, afterEach, before, test } from "node:test";

import { randomUUID } from "node:crypto";

import { AISessionTerminated, ConflictError } from "../dist/index.js";
import { startAll } from "./helpers/sandbox.mjs";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

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

function count(commands, prefix) {
  return commands.filter((c) => c.startsWith(prefix)).length;
}

test("the same key twice: the stored answer, Idempotent-Replayed: true, one uuid_hold", async () => {
  const call = await sandbox.startCall(agent);
  const key = randomUUID();
  const first = await ai.controlResponse(call.callId, { event: "hold" }, { callbackToken: call.token, idempotencyKey: key });
  const again = await ai.controlResponse(call.callId, { event: "hold" }, { callbackToken: call.token, idempotencyKey: key });
  assert.equal(first.status, 200);
  assert.equal(first.headers.get("idempotent-replayed"), null);
  assert.equal(again.status, 200);
  assert.equal(again.headers.get("idempotent-replayed"), "true");
  assert.deepEqual(again.data, first.data);
  assert.notEqual(again.headers.get("x-request-id"), first.headers.get("x-request-id"));
  assert.equal(count(await sandbox.commands(call.callId), `uuid_hold ${call.callId}`), 1);
});

test("the typed methods take idempotencyKey: a replayed hold is not already_held", async () => {
  const call = await sandbox.startCall(agent);
  const key = randomUUID();
  const a = await ai.hold(call.callId, { callbackToken: call.token, idempotencyKey: key });
  const b = await ai.hold(call.callId, { callbackToken: call.token, idempotencyKey: key });
  assert.deepEqual(b, a);
  // Without a key of its own, a second hold is a new request: 409 already_held.
  await assert.rejects(ai.hold(call.callId, { callbackToken: call.token }), (err) => err instanceof ConflictError && err.code === "already_held");
});

test("transfer: the replay answers the cached 200, a new key is AISessionTerminated", async () => {
  const call = await sandbox.startCall(agent);
  const key = randomUUID();
  const body = { destination_type: "agent_queue", destination: "tier1", callbackToken: call.token, idempotencyKey: key };
  const first = await ai.transfer(call.callId, body);
  const replay = await ai.transfer(call.callId, body);
  assert.deepEqual(replay, first);
  await assert.rejects(ai.transfer(call.callId, { ...body, idempotencyKey: undefined }), AISessionTerminated);
});

test("the same key with another body is a ValidationError (422 idempotency_key_reused)", async () => {
  const call = await sandbox.startCall(agent);
  const key = randomUUID();
  await ai.sendDtmf(call.callId, { digits: "1", callbackToken: call.token, idempotencyKey: key });
  await assert.rejects(ai.sendDtmf(call.callId, { digits: "2", callbackToken: call.token, idempotencyKey: key }), {
    name: "ValidationError",
    status: 422,
    code: "idempotency_key_reused",
  });
});

test("the SDK's own keys: UUID v4 per call, the same one on a 429 retry, replayable", async () => {
  const sent = [];
  const recording = async (url, init) => {
    const res = await fetch(url, init);
    sent.push({ key: new Headers(init.headers).get("idempotency-key"), status: res.status });
    return res;
  };
  const client = sandbox.sdk({ fetch: recording, retryOn429: true });
  const call = await sandbox.startCall(agent);
  await client.aiSessions.sendDtmf(call.callId, { digits: "1", callbackToken: call.token });
  await client.aiSessions.sendDtmf(call.callId, { digits: "2", callbackToken: call.token });
  await client.aiSessions.getCallState(call.callId, { callbackToken: call.token });
  assert.match(sent[0].key, UUID_V4);
  assert.match(sent[1].key, UUID_V4);
  assert.notEqual(sent[0].key, sent[1].key);
  assert.equal(sent[2].key, null, "get_call_state sends no key");

  // Exhaust the call's 10 requests a second, then mute: 429 first, then the same key goes through.
  sent.length = 0;
  await Promise.allSettled(Array.from({ length: 12 }, () => ai.getCallState(call.callId, { callbackToken: call.token })));
  await client.aiSessions.mute(call.callId, { callbackToken: call.token });
  const mutes = sent.filter((s) => s.key !== null);
  assert.ok(mutes.length >= 2, JSON.stringify(sent));
  assert.equal(mutes[0].status, 429);
  assert.equal(mutes.at(-1).status, 200);
  assert.equal(new Set(mutes.map((m) => m.key)).size, 1);

  // That key is now stored: replaying it answers the stored mute.
  await new Promise((r) => setTimeout(r, 1100));
  const replay = await ai.controlResponse(call.callId, { event: "mute", target: "caller" }, { callbackToken: call.token, idempotencyKey: mutes[0].key });
  assert.equal(replay.headers.get("idempotent-replayed"), "true");
  assert.equal(count(await sandbox.commands(call.callId), `uuid_audio ${call.callId} start read mute 1`), 1);
});
