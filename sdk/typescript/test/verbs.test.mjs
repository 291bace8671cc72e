// Every control verb through the SDK against a running `bridge sandbox`, each on a fresh AI call
// with the callback token from the audio fork's metadata frame: the answer's envelope, the verb's
// result, and what the simulated switch or the session shows afterwards.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import { CONTROL_EVENTS } from "../dist/index.js";
import { startAll, waitUntil } from "./helpers/sandbox.mjs";

const ISO_MS_Z = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const LEAD_PHONE = "+442079460958";
const TIP = "https://cdn.example.com/coach/upsell-tip.wav";

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

/** A live call; with a campaign lead when `lead` is set. */
async function live({ lead = false } = {}) {
  if (!lead) return sandbox.startCall(agent);
  const campaign = await sandbox.client.campaigns.create({ name: "Renewals" });
  const created = await sandbox.client.leads.create({ campaign_id: String(campaign.id), phone: LEAD_PHONE });
  const call = await sandbox.startCall(agent, { campaign_id: campaign.id, lead_id: created.id });
  assert.equal(call.metadata.lead_id, created.id);
  return call;
}

function envelope(answer, call) {
  assert.equal(answer.ok, true);
  assert.equal(answer.call_id, call.callId);
  assert.match(answer.dispatched_at, ISO_MS_Z);
  assert.equal(typeof answer.result, "object");
  return answer.result;
}

async function sentSince(call, before) {
  return (await sandbox.commands(call.callId)).slice(before.length);
}

/** Run `verb` on `call`; [result, commands the switch got for it]. */
async function run(call, verb, fields = {}) {
  const beforeCmds = await sandbox.commands(call.callId);
  const answer = await ai[verb](call.callId, { ...fields, callbackToken: call.token });
  return [envelope(answer, call), await sentSince(call, beforeCmds)];
}

async function session(call) {
  return sandbox.client.aiSessions.get(call.callId);
}

/** A conference with an agent leg in it: what monitor_start, whisper and barge need. */
async function room() {
  const call = await live();
  const [started] = await run(call, "conferenceStart");
  const [added] = await run(call, "conferenceAdd", { participant_type: "agent", destination: "1001" });
  return { call, conferenceId: started.conference_id, target: added.call_id, memberId: added.member_id };
}

const CASES = {
  async transfer() {
    const call = await live();
    const [result, sent] = await run(call, "transfer", { destination_type: "agent_queue", destination: "tier1", metadata: { intent: "billing" } });
    assert.deepEqual(result, {});
    assert.deepEqual(sent, [`uuid_audio_fork ${call.callId} stop ai_fork`, `uuid_transfer ${call.callId} 'callcenter:tier1@default' inline`]);
    const s = await session(call);
    assert.equal(s.outcome, "transferred_agent_queue");
  },
  async hangup() {
    const call = await live();
    const [result, sent] = await run(call, "hangup", { metadata: { reason: "task_complete" } });
    assert.deepEqual(result, {});
    assert.deepEqual(sent, [`uuid_kill ${call.callId} NORMAL_CLEARING`]);
    assert.equal((await session(call)).outcome, "hangup");
  },
  async log() {
    const call = await live();
    const [result, sent] = await run(call, "log", { metadata: { step: "intent_classified", intent: "renewal" } });
    assert.deepEqual(result, {});
    assert.deepEqual(sent, []);
    const logs = (await session(call)).metadata.logs;
    assert.ok(logs.some((e) => e.step === "intent_classified" && e.intent === "renewal"), JSON.stringify(logs));
  },
  async mute() {
    const call = await live();
    const [result, sent] = await run(call, "mute", { target: "caller" });
    assert.deepEqual(result, {});
    assert.deepEqual(sent, [`uuid_exists ${call.callId}`, `uuid_audio ${call.callId} start read mute 1`]);
    assert.deepEqual((await sandbox.channel(call.callId)).muted, { read: true, write: false });
  },
  async unmute() {
    const call = await live();
    await run(call, "mute", { target: "agent" });
    const [result, sent] = await run(call, "unmute", { target: "agent" });
    assert.deepEqual(result, {});
    assert.deepEqual(sent, [`uuid_exists ${call.callId}`, `uuid_audio ${call.callId} start write mute 0`]);
    assert.deepEqual((await sandbox.channel(call.callId)).muted, { read: false, write: false });
  },
  async hold() {
    const call = await live();
    const [result, sent] = await run(call, "hold", { moh_url: "https://cdn.example.com/moh.wav" });
    assert.deepEqual(result, {});
    assert.ok(sent.includes(`uuid_hold ${call.callId}`), sent.join("\n"));
    assert.ok(sent.includes(`uuid_displace ${call.callId} start http_cache://https://cdn.example.com/moh.wav 0 lm`), sent.join("\n"));
    assert.equal((await sandbox.channel(call.callId)).held, true);
  },
  async unhold() {
    const call = await live();
    await run(call, "hold");
    const [result, sent] = await run(call, "unhold");
    assert.deepEqual(result, {});
    assert.ok(sent.includes(`uuid_hold off ${call.callId}`), sent.join("\n"));
    assert.equal((await sandbox.channel(call.callId)).held, false);
  },
  async send_dtmf() {
    const call = await live();
    const [result, sent] = await run(call, "sendDtmf", { digits: "1234#" });
    assert.deepEqual(result, {});
    assert.deepEqual(sent, [`uuid_send_dtmf ${call.callId} 1234#`]);
    assert.equal((await sandbox.channel(call.callId)).dtmf_sent, "1234#");
  },
  async play_audio() {
    const call = await live();
    const url = "https://cdn.example.com/prompts/greeting.wav";
    const [result, sent] = await run(call, "playAudio", { audio_url: url });
    assert.deepEqual(Object.keys(result), ["playback_id"]);
    assert.match(result.playback_id, /^pb_[0-9A-Z]{26}$/);
    assert.deepEqual(sent, [`uuid_broadcast ${call.callId} playback::{playback_id=${result.playback_id}}http_cache://${url} aleg`]);
  },
  async set_disposition() {
    const call = await live();
    const [result, sent] = await run(call, "setDisposition", { disposition: "interested", notes: "callback Tue 2pm" });
    assert.deepEqual(result, {});
    assert.deepEqual(sent, []);
    const [state] = await run(call, "getCallState");
    assert.equal(state.disposition, "interested");
  },
  async recording_pause() {
    const call = await live();
    const [result, sent] = await run(call, "recordingPause", { reason: "pci" });
    assert.deepEqual(result, {});
    assert.equal(sent.length, 1);
    assert.match(sent[0], new RegExp(`^uuid_record ${call.callId} mask `));
    assert.equal((await sandbox.channel(call.callId)).recording.masked, true);
  },
  async recording_resume() {
    const call = await live();
    await run(call, "recordingPause");
    const [result, sent] = await run(call, "recordingResume");
    assert.deepEqual(result, {});
    assert.match(sent[0], new RegExp(`^uuid_record ${call.callId} unmask `));
    assert.equal((await sandbox.channel(call.callId)).recording.masked, false);
  },
  async get_call_state() {
    const call = await live();
    await run(call, "hold");
    const [result, sent] = await run(call, "getCallState");
    assert.deepEqual(sent, []);
    assert.deepEqual(
      { ...result, duration_s: 0 },
      {
        state: "in_progress",
        duration_s: 0,
        answered: true,
        current_participants: ["caller", "ai_agent"],
        is_recording: true,
        is_muted: { caller: false, agent: false },
        is_held: true,
        conference_id: null,
        disposition: null,
      },
    );
    assert.ok(Number.isInteger(result.duration_s) && result.duration_s >= 0);
  },
  async conference_start() {
    const call = await live();
    const [result] = await run(call, "conferenceStart");
    assert.deepEqual(Object.keys(result), ["conference_id"]);
    assert.match(result.conference_id, /^conf_/);
    const [state] = await run(call, "getCallState");
    assert.equal(state.conference_id, result.conference_id);
  },
  async conference_add() {
    const call = await live();
    await run(call, "conferenceStart");
    const [result] = await run(call, "conferenceAdd", { participant_type: "agent", destination: "1001", metadata: { reason: "warm_handoff" } });
    assert.deepEqual(Object.keys(result).sort(), ["call_id", "member_id"]);
    assert.match(result.member_id, /^mem-\d+$/);
    assert.ok((await sandbox.channel(result.call_id)).answered);
  },
  async conference_remove() {
    const r = await room();
    const [result] = await run(r.call, "conferenceRemove", { member_id: r.memberId });
    assert.deepEqual(result, {});
    await waitUntil(async () => (await sandbox.channel(r.target)).hangup_cause !== null, { what: "the removed member's leg hung up" });
  },
  async conference_leave() {
    const call = await live();
    await run(call, "conferenceStart");
    const [result] = await run(call, "conferenceLeave");
    assert.deepEqual(result, {});
    assert.equal((await session(call)).outcome, "conference_left");
  },
  async request_supervisor() {
    const call = await live();
    const [result, sent] = await run(call, "requestSupervisor", { reason: "Caller is angry, needs senior rep", urgency: "high" });
    assert.deepEqual(Object.keys(result), ["escalation_id"]);
    assert.match(result.escalation_id, /^esc_/);
    assert.deepEqual(sent, []);
    const escalation = await sandbox.client.request({ method: "GET", path: `/api/v1/escalations/${result.escalation_id}` });
    assert.equal(escalation.urgency, "high");
  },
  async whisper() {
    const r = await room();
    await run(r.call, "monitorStart", { target_call_id: r.target, mode: "listen" });
    const [result] = await run(r.call, "whisper", { target_call_id: r.target, audio_url: TIP });
    assert.deepEqual(result, {});
  },
  async barge() {
    const r = await room();
    await run(r.call, "monitorStart", { target_call_id: r.target });
    const [result] = await run(r.call, "barge", { target_call_id: r.target });
    assert.equal(result.conference_id, r.conferenceId);
    assert.ok("member_id" in result);
  },
  async monitor_start() {
    const r = await room();
    const [result] = await run(r.call, "monitorStart", { target_call_id: r.target, mode: "listen" });
    assert.deepEqual(result, {});
    // The target's audio now forks into the AI's WebSocket: a monitor metadata frame arrives.
    await agent.waitFor(() => agent.connections.find((c) => c.texts[0]?.type === "monitor" && c.texts[0]?.target_call_id === r.target));
  },
  async monitor_stop() {
    const r = await room();
    await run(r.call, "monitorStart", { target_call_id: r.target });
    const [result] = await run(r.call, "monitorStop", { target_call_id: r.target });
    assert.deepEqual(result, {});
  },
  async set_lead_field() {
    const call = await live({ lead: true });
    const leadId = call.metadata.lead_id;
    const [result, sent] = await run(call, "setLeadField", { field: "preferred_callback_window", value: "weekday_evenings" });
    assert.deepEqual(result, { lead_id: leadId, field: "preferred_callback_window", value: "weekday_evenings" });
    assert.deepEqual(sent, []);
    const lead = await sandbox.client.leads.get(leadId);
    assert.deepEqual(lead.custom_fields, { preferred_callback_window: "weekday_evenings" });
  },
  async set_lead_status() {
    const call = await live({ lead: true });
    const leadId = call.metadata.lead_id;
    const [result] = await run(call, "setLeadStatus", { status: "completed" });
    assert.deepEqual(result, { lead_id: leadId, status: "completed" });
    const lead = await sandbox.client.leads.get(leadId);
    assert.equal(lead.status, "completed");
    assert.equal(lead.status_set_by, "ai");
  },
  async schedule_callback() {
    const call = await live({ lead: true });
    const at = new Date(Date.now() + 3600_000).toISOString();
    const [result, sent] = await run(call, "scheduleCallback", { scheduled_at: at, reason: "Customer requested Tuesday 2pm" });
    assert.deepEqual(Object.keys(result).sort(), ["callback_id", "scheduled_at"]);
    assert.match(result.callback_id, /^cb_/);
    assert.match(result.scheduled_at, /Z$/);
    assert.deepEqual(sent, []);
    const callback = await sandbox.client.request({ method: "GET", path: `/api/v1/callbacks/${result.callback_id}` });
    assert.equal(callback.lead_id, call.metadata.lead_id);
  },
};

describe("every control verb against the sandbox", () => {
  test("a case for each of the document's 25 verbs", () => {
    assert.deepEqual(Object.keys(CASES).sort(), [...CONTROL_EVENTS].sort());
  });
  for (const [verb, body] of Object.entries(CASES)) {
    test(verb, body);
  }
});

describe("the rest of aiSessions", () => {
  test("list and get", async () => {
    const call = await live();
    const all = await sandbox.client.aiSessions.list();
    assert.ok(all.some((s) => s.call_id === call.callId));
    const one = await sandbox.client.aiSessions.get(call.callId);
    assert.equal(one.call_id, call.callId);
    assert.equal(one.state, "in_progress");
  });

  test("control(): a raw body, and an unknown verb is a ValidationError", async () => {
    const call = await live();
    const answer = await ai.control(call.callId, { event: "send_dtmf", digits: "9" }, { callbackToken: call.token });
    envelope(answer, call);
    await assert.rejects(ai.control(call.callId, { event: "teleport" }, { callbackToken: call.token }), (err) => {
      assert.equal(err.name, "ValidationError");
      assert.equal(err.status, 400);
      assert.deepEqual(err.errors[0].loc, ["event"]);
      return true;
    });
  });

  test("revokeToken: the token stops working", async () => {
    const call = await live();
    const revoked = await sandbox.client.aiSessions.revokeToken(call.callId, call.token);
    assert.equal(revoked.ok, true);
    assert.equal(typeof revoked.jti, "string");
    assert.ok(Number.isInteger(revoked.revoked_until_ts));
    await assert.rejects(ai.getCallState(call.callId, { callbackToken: call.token }), { name: "AuthenticationError", code: "token_revoked" });
  });

  test("a tenant API key drives a call too (ai_sessions:control_admin)", async () => {
    const call = await live();
    const answer = await ai.getCallState(call.callId);
    envelope(answer, call);
  });
});
