// Webhooks end to end: a local HTTP receiver subscribed with client.webhooks.create, real
// deliveries from a running `bridge sandbox` (the sandbox allows loopback http), each checked with
// verifyWebhook on the raw body and Node's req.headers, and cross-checked with the Python SDK's
// yotel.webhook.verify; a secret rotation's two signatures; the delivery log and redeliver.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, afterEach, before, describe, test } from "node:test";

import { InvalidSignature, NotFoundError, verifyAndParseWebhook, verifyWebhook } from "../dist/index.js";
import { oracle, pythonMissing } from "./helpers/python.mjs";
import { startAll, waitUntil } from "./helpers/sandbox.mjs";

class Receiver {
  constructor() {
    this.requests = [];
    this.answer = () => 200;
    this.server = createServer((req, res) => {
      const chunks = [];
      req.on("data", (c) => chunks.push(c));
      req.on("end", () => {
        const rec = { headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks), at: Math.floor(Date.now() / 1000) };
        rec.json = JSON.parse(rec.body.toString("utf8"));
        this.requests.push(rec);
        res.writeHead(this.answer(rec)).end("ok");
      });
    });
  }

  async start() {
    await new Promise((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${this.server.address().port}/hook`;
    return this;
  }

  stop() {
    this.server.closeAllConnections?.();
    return new Promise((r) => this.server.close(r));
  }

  of(type, callId) {
    return this.requests.filter((r) => r.json.event_type === type && (!callId || r.json.data.call_id === callId));
  }
}

let env;
let sandbox;
let agent;
let receiver;
let sub;

before(async () => {
  env = await startAll();
  ({ sandbox, agent } = env);
  receiver = await new Receiver().start();
  sub = await sandbox.client.webhooks.create({ url: receiver.url, event_types: ["call.*", "ai_session.*"] });
});
afterEach(async () => {
  await sandbox.endCalls();
});
after(async () => {
  await env?.stop();
  await receiver?.stop();
});

function pythonVerdicts(recs, secret) {
  return oracle({
    verify: recs.map((r) => ({ body_b64: r.body.toString("base64"), headers: r.headers, secret, now: r.at })),
  }).verify;
}

describe("real deliveries", () => {
  test("the subscription: create answers the secret once; list, get, update", async () => {
    assert.match(String(sub.id), /^wh_sub_/);
    assert.match(String(sub.signing_secret), /^whsec_/);
    assert.deepEqual(sub.event_types, ["call.*", "ai_session.*"]);
    const listed = await sandbox.client.webhooks.list();
    assert.deepEqual(listed.map((s) => s.id), [sub.id]);
    assert.equal("signing_secret" in listed[0], false);
    const got = await sandbox.client.webhooks.get(String(sub.id));
    assert.equal(got.url, receiver.url);
    const updated = await sandbox.client.webhooks.update(String(sub.id), { event_types: ["call.*", "ai_session.*", "lead.*"] });
    assert.deepEqual(updated.event_types, ["call.*", "ai_session.*", "lead.*"]);
  });

  test("every delivery of a call verifies with verifyWebhook, and with yotel.webhook.verify", async (t) => {
    const call = await sandbox.startCall(agent);
    await sandbox.client.aiSessions.hangup(call.callId, { metadata: { reason: "task_complete" }, callbackToken: call.token });
    await waitUntil(() => receiver.of("ai_session.ended", call.callId).length && receiver.of("call.ended", call.callId).length, {
      timeoutMs: 15_000,
      what: "ai_session.ended and call.ended delivered",
    });
    const mine = receiver.requests.filter((r) => r.json.data.call_id === call.callId);
    const types = new Set(mine.map((r) => r.json.event_type));
    for (const t of ["call.started", "ai_session.started", "ai_session.ended", "call.ended"]) assert.ok(types.has(t), `${t} in ${[...types]}`);
    const secret = String(sub.signing_secret);
    for (const rec of mine) {
      verifyWebhook(rec.body, rec.headers, secret);
      const event = verifyAndParseWebhook(rec.body, rec.headers, secret);
      assert.equal(event.event_type, rec.headers["x-yotel-event"]);
      assert.equal(event.event_id, rec.headers["x-yotel-event-id"]);
      assert.equal(event.tenant_id, sandbox.tenant);
      assert.ok(Number.isInteger(event.timestamp));
      assert.match(rec.headers["x-yotel-signature"], /^sha256=[0-9a-f]{64}$/);
      // The raw header pairs as they came over the wire work as well.
      const pairs = [];
      for (let i = 0; i < rec.rawHeaders.length; i += 2) pairs.push([rec.rawHeaders[i], rec.rawHeaders[i + 1]]);
      verifyWebhook(rec.body, pairs, secret);
      verifyWebhook(rec.body.toString("utf8"), new Headers(rec.headers), secret);
    }
    const ended = receiver.of("ai_session.ended", call.callId)[0];
    assert.equal(ended.json.data.outcome, "hangup");
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    assert.deepEqual(pythonVerdicts(mine, secret), mine.map(() => "ok"));
  });

  test("tampered, wrongly keyed or stale deliveries are refused, as the Python SDK refuses them", async (t) => {
    const rec = receiver.requests.at(-1);
    const secret = String(sub.signing_secret);
    const tampered = Buffer.from(rec.body.toString("utf8").replace(/"data":\{/, '"data":{"x":1,'));
    const cases = [
      [tampered, rec.headers, secret, rec.at, "signature mismatch"],
      [rec.body, rec.headers, "whsec_not_it", rec.at, "signature mismatch"],
      [rec.body, rec.headers, secret, Number(rec.headers["x-yotel-timestamp"]) + 301, "timestamp outside replay window"],
      [rec.body, { ...rec.headers, "x-yotel-signature": undefined }, secret, rec.at, "missing signature or timestamp header"],
    ];
    for (const [body, headers, s, now, reason] of cases) {
      assert.throws(() => verifyWebhook(body, headers, s, { now }), (err) => err instanceof InvalidSignature && err.reason === reason);
    }
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    const py = oracle({
      verify: cases.map(([body, headers, s, now]) => ({
        body_b64: body.toString("base64"),
        headers: Object.fromEntries(Object.entries(headers).filter(([, v]) => v !== undefined)),
        secret: s,
        now,
      })),
    }).verify;
    assert.deepEqual(py, cases.map((c) => c[4]));
  });

  test("rotateSecret: deliveries carry both signatures, either secret verifies", async (t) => {
    const oldSecret = String(sub.signing_secret);
    const rotated = await sandbox.client.webhooks.rotateSecret(String(sub.id));
    const newSecret = String(rotated.signing_secret);
    assert.notEqual(newSecret, oldSecret);
    assert.ok(rotated.previous_secret_expires_at);
    const call = await sandbox.startCall(agent);
    const rec = await waitUntil(() => receiver.of("ai_session.started", call.callId)[0], { timeoutMs: 15_000, what: "a delivery after the rotation" });
    const tokens = rec.headers["x-yotel-signature"].split(",");
    assert.equal(tokens.length, 2);
    verifyWebhook(rec.body, rec.headers, oldSecret);
    verifyWebhook(rec.body, rec.headers, newSecret);
    assert.throws(() => verifyWebhook(rec.body, rec.headers, "whsec_neither"), InvalidSignature);
    sub.signing_secret = newSecret;
    const missing = pythonMissing();
    if (missing) return t.skip(missing);
    assert.deepEqual(pythonVerdicts([rec, rec], oldSecret), ["ok", "ok"]);
    assert.deepEqual(pythonVerdicts([rec], newSecret), ["ok"]);
  });

  test("the delivery log, and redeliver of a dead delivery", async () => {
    // A 4xx is dead at once: refuse the next ai_session.started, then take it on redelivery.
    receiver.answer = (rec) => (rec.json.event_type === "ai_session.started" ? 410 : 200);
    const call = await sandbox.startCall(agent);
    const refusedOnce = await waitUntil(() => receiver.of("ai_session.started", call.callId)[0], { timeoutMs: 15_000, what: "the refused delivery" });
    receiver.answer = () => 200;
    const eventId = refusedOnce.json.event_id;
    const [dead] = await waitUntil(
      async () => {
        const entries = await sandbox.client.webhooks.deliveries(String(sub.id), { event_id: eventId, state: "dead" });
        return entries.length ? entries : null;
      },
      { what: "the dead delivery in the log" },
    );
    assert.equal(dead.status_code, 410);
    assert.equal(dead.event_type, "ai_session.started");
    const again = await sandbox.client.webhooks.redeliver(String(sub.id), String(dead.delivery_id));
    assert.equal(again.state, "pending");
    await waitUntil(() => receiver.of("ai_session.started", call.callId).length === 2, { timeoutMs: 15_000, what: "the redelivery" });
    const [first, second] = receiver.of("ai_session.started", call.callId);
    assert.equal(second.json.event_id, first.json.event_id);
    assert.ok(second.body.equals(first.body), "the same body byte for byte");
    verifyWebhook(second.body, second.headers, String(sub.signing_secret));
    const all = await sandbox.client.webhooks.deliveries(String(sub.id), { limit: 1000 });
    assert.ok(all.some((d) => d.state === "delivered"));
  });

  test("delete: 204, then NotFoundError", async () => {
    await sandbox.client.webhooks.delete(String(sub.id));
    await assert.rejects(sandbox.client.webhooks.get(String(sub.id)), NotFoundError);
  });
});
