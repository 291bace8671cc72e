// voiceAgents, campaigns, leads, calls and recordings against a running `bridge sandbox`.

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";

import { NotFoundError, ValidationError } from "../dist/index.js";
import { CALLER, DIALED, sleep, startAll, waitUntil } from "./helpers/sandbox.mjs";

let env;
let sandbox;
let agent;
let client;

before(async () => {
  env = await startAll();
  ({ sandbox, agent } = env);
  client = sandbox.client;
});
afterEach(async () => {
  await sandbox.endCalls();
});
after(async () => {
  await env?.stop();
});

describe("voiceAgents", () => {
  test("create, get, list, update, archive, delete, default", async () => {
    const created = await client.voiceAgents.create({ name: "Sales Bot", ws_url: "wss://ai.example.com/stream", token_lifetime: "ws_session" });
    assert.match(created.id, /^va_/);
    assert.equal(created.tenant_id, sandbox.tenant);
    assert.equal(created.max_concurrent, 10);
    assert.equal(created.token_lifetime, "ws_session");
    assert.equal(created.subprotocol, "audio.drachtio.org");
    assert.equal(created.status, "active");
    assert.deepEqual(await client.voiceAgents.get(created.id), created);
    assert.ok((await client.voiceAgents.list()).some((a) => a.id === created.id));
    assert.ok((await client.voiceAgents.list({ status: "active" })).some((a) => a.id === created.id));
    const updated = await client.voiceAgents.update(created.id, { max_concurrent: 20, subprotocol: "audio.jambonz.org" });
    assert.equal(updated.max_concurrent, 20);
    assert.equal(updated.subprotocol, "audio.jambonz.org");
    assert.equal(updated.name, "Sales Bot");

    const before = await client.voiceAgents.getDefault();
    const set = await client.voiceAgents.setAsDefault(created.id);
    assert.deepEqual(set, { voice_agent_id: created.id });
    assert.equal(await client.voiceAgents.getDefault(), created.id);
    await client.voiceAgents.setAsDefault(before);
    assert.equal(await client.voiceAgents.getDefault(), before);

    const archived = await client.voiceAgents.archive(created.id);
    assert.equal(archived.status, "archived");
    assert.ok((await client.voiceAgents.list({ status: "archived" })).some((a) => a.id === created.id));
    assert.equal(await client.voiceAgents.delete(created.id), undefined);
    await assert.rejects(client.voiceAgents.get(created.id), NotFoundError);
  });

  test("a bad ws_url is a ValidationError naming the field", async () => {
    const err = await client.voiceAgents.create({ name: "x", ws_url: "http://not-a-websocket" }).catch((e) => e);
    assert.ok(err instanceof ValidationError, err.message);
    assert.ok(err.errors.some((e) => e.loc.includes("ws_url")), JSON.stringify(err.errors));
  });
});

describe("campaigns and leads", () => {
  test("create, list, get, update, delete; leads create, bulk, get", async () => {
    const campaign = await client.campaigns.create({ name: "Q4 renewals", dial_mode: "predictive" });
    assert.match(String(campaign.id), /^cmp_/);
    assert.equal(campaign.dial_mode, "predictive");
    assert.equal(campaign.status, "draft");
    const id = String(campaign.id);
    assert.ok((await client.campaigns.list()).some((c) => c.id === id));
    assert.equal((await client.campaigns.get(id)).name, "Q4 renewals");
    const patched = await client.campaigns.update(id, { description: "calls to renew", max_attempts: 5 });
    assert.equal(patched.description, "calls to renew");
    assert.equal(patched.max_attempts, 5);

    const lead = await client.leads.create({ campaign_id: id, phone: "+919800000001", name: "Asha", metadata: { tier: "gold" } });
    assert.match(String(lead.id), /^lead_/);
    assert.equal(lead.campaign_id, id);
    assert.deepEqual(lead.metadata, { tier: "gold" });
    assert.equal((await client.leads.get(String(lead.id))).name, "Asha");
    const bulk = await client.leads.bulk({
      campaign_id: id,
      leads: [{ phone: "+919800000002" }, { phone: "not a phone" }, { phone: "+919800000001" }],
    });
    assert.deepEqual([bulk.total, bulk.valid, bulk.invalid, bulk.duplicates], [3, 1, 1, 1]);
    assert.deepEqual(bulk.results.map((r) => r.status), ["added", "invalid", "duplicate"]);

    await client.campaigns.delete(id);
    await assert.rejects(client.campaigns.get(id), NotFoundError);
    await assert.rejects(client.leads.get(String(lead.id)), NotFoundError);
  });
});

describe("calls and recordings", () => {
  test("calls.create places an outbound AI call; calls.get shows it", async () => {
    await sandbox.ensureDefaultAgent(agent);
    const placed = await client.calls.create({ to: DIALED, from: CALLER });
    sandbox.live.push(placed.call_id);
    assert.match(placed.call_id, /^[0-9a-f-]{36}$/);
    const meta = await agent.metadata(placed.call_id);
    assert.equal(meta.direction, "outbound");
    const call = await client.calls.get(placed.call_id);
    assert.equal(call.id ?? call.call_id, placed.call_id);
  });

  test("a finished call's recording: signed URL, bytes, download", async () => {
    const live = await sandbox.startCall(agent);
    await sleep(600); // some audio in the file, not just its header
    await client.aiSessions.hangup(live.callId, { callbackToken: live.token });
    const info = await waitUntil(
      async () => {
        try {
          return await client.recordings.getSignedUrl(live.callId);
        } catch (err) {
          if (err.status === 409 || err.status === 404) return null;
          throw err;
        }
      },
      { timeoutMs: 10_000, what: "the recording" },
    );
    assert.equal(info.call_id, live.callId);
    assert.equal(info.format, "audio/wav");
    assert.equal(info.stereo, true);
    assert.ok(info.size_bytes > 44, `${info.size_bytes} bytes, ${info.duration_ms} ms`);
    const bytes = await client.recordings.fetchBytes(live.callId);
    assert.equal(bytes.length, info.size_bytes);
    assert.equal(Buffer.from(bytes.subarray(0, 4)).toString("latin1"), "RIFF");
    assert.equal(Buffer.from(bytes.subarray(8, 12)).toString("latin1"), "WAVE");
    const dir = await mkdtemp(path.join(tmpdir(), "yotel-ts-rec-"));
    try {
      const dest = path.join(dir, "call.wav");
      assert.equal(await client.recordings.download(live.callId, dest), dest);
      assert.deepEqual(new Uint8Array(await readFile(dest)), bytes);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    // The signed URL needs no key.
    const signed = await fetch(info.url);
    assert.equal(signed.status, 200);
    assert.equal((await signed.arrayBuffer()).byteLength, info.size_bytes);
  });
});
