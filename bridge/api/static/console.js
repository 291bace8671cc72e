// The supervisor console: one WebSocket to the bridge (escalations pushed as they happen), the
// escalations API for claims and the claimed call's state. Plain DOM, no build step. Everything
// the bridge sends is put on the page with textContent, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    apiKey: null,
    supervisorId: null,
    hello: null,
    ws: null,
    escalations: new Map(), // escalation_id -> escalation
    claimedId: null,
    refreshTimer: null,
    retryMs: 500,
    signedIn: false,
  };

  // ------------------------------------------------------------ connection

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/api/v1/supervisors/ws`;
  }

  function setStatus(text, online) {
    const el = $("status");
    el.textContent = text;
    el.className = `status ${online ? "online" : "offline"}`;
  }

  function connect() {
    const ws = new WebSocket(wsUrl());
    state.ws = ws;
    setStatus("Connecting…", false);
    ws.addEventListener("open", () => ws.send(JSON.stringify(state.hello)));
    ws.addEventListener("message", (ev) => {
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      onFrame(frame);
    });
    ws.addEventListener("close", (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      if (!state.signedIn) {
        // Refused before the welcome: back to the sign-in form with the reason.
        $("login-error").textContent = ev.reason ? `Refused: ${ev.reason}` : "Could not connect";
        $("connect").disabled = false;
        setStatus("Not connected", false);
        return;
      }
      setStatus("Disconnected, retrying…", false);
      setTimeout(connect, state.retryMs);
      state.retryMs = Math.min(state.retryMs * 2, 10000);
    });
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "welcome":
        state.signedIn = true;
        state.retryMs = 500;
        $("login").hidden = true;
        $("main").hidden = false;
        $("duty-toggle").hidden = false;
        $("duty").checked = true;
        setStatus(`Connected as ${frame.supervisor ? frame.supervisor.name : state.supervisorId}`, true);
        replaceAll(frame.escalations || []);
        break;
      case "escalation.created":
      case "escalation.claimed":
      case "escalation.closed":
        upsert(frame.escalation);
        if (frame.escalation.escalation_id === state.claimedId) refreshClaimed();
        break;
      case "snapshot":
        (frame.escalations || []).forEach(upsert);
        break;
      case "duty":
        $("duty").checked = frame.on_duty;
        if (frame.on_duty && frame.escalations) frame.escalations.forEach(upsert);
        setStatus(frame.on_duty ? "On duty" : "Off duty", frame.on_duty);
        break;
      case "error":
        $("login-error").textContent = `${frame.code}: ${frame.message}`;
        break;
      default:
        break;
    }
  }

  // ------------------------------------------------------------ the list

  function replaceAll(list) {
    for (const esc of list) state.escalations.set(esc.escalation_id, esc);
    render();
  }

  function upsert(esc) {
    state.escalations.set(esc.escalation_id, esc);
    render();
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function time(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString();
  }

  function render() {
    const ul = $("escalations");
    const items = [...state.escalations.values()].sort((a, b) => (a.created_at < b.created_at ? 1 : -1));
    ul.replaceChildren(...items.map(item));
    const waiting = items.filter((e) => e.status === "pending").length;
    $("count").textContent = `${waiting} waiting`;
    $("empty").hidden = items.length > 0;
  }

  function item(esc) {
    const li = el("li", `escalation urgency-${esc.urgency} status-${esc.status}`);
    li.dataset.escalationId = esc.escalation_id;
    li.dataset.status = esc.status;
    const top = el("div", "top");
    top.append(el("span", `badge ${esc.urgency}`, esc.urgency), el("span", "reason", esc.reason));
    if (esc.status === "pending") {
      const btn = el("button", "claim", "Claim");
      btn.type = "button";
      btn.addEventListener("click", () => claim(esc.escalation_id, btn));
      top.append(btn);
    }
    li.append(top);
    const caller = esc.caller || {};
    li.append(el("div", "meta",
      `${caller.from || "?"} → ${caller.to || "?"} · call ${esc.call_id} · ${time(esc.created_at)}`));
    let outcome = "";
    if (esc.status === "claimed") {
      outcome = esc.supervisor_id === state.supervisorId ? "Claimed by you" : `Claimed by ${esc.supervisor_id}`;
    } else if (esc.status === "closed") {
      outcome = "Call ended";
    }
    if (outcome) li.append(el("div", "outcome", outcome));
    const err = el("div", "error");
    err.dataset.role = "claim-error";
    li.append(err);
    return li;
  }

  // ------------------------------------------------------------ claims and the claimed call

  async function api(method, path, body) {
    const resp = await fetch(path, {
      method,
      headers: { Authorization: `Bearer ${state.apiKey}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await resp.json().catch(() => ({}));
    return { status: resp.status, data };
  }

  async function claim(escId, btn) {
    btn.disabled = true;
    const { status, data } = await api("POST", `/api/v1/escalations/${encodeURIComponent(escId)}/claim`,
      { supervisor_id: state.supervisorId });
    if (status === 200) {
      upsert(data);
      showClaimed(data);
      return;
    }
    const detail = data.detail || {};
    const li = document.querySelector(`li[data-escalation-id="${CSS.escape(escId)}"]`);
    const msg = detail.code === "escalation_already_claimed"
      ? `Already claimed by ${detail.supervisor_id}` : `${detail.code || status}: ${detail.message || ""}`;
    if (li) li.querySelector("[data-role=claim-error]").textContent = msg;
    btn.disabled = false;
  }

  const STATE_ROWS = [
    ["state", "State"], ["answered", "Answered"], ["duration_s", "Duration (s)"],
    ["current_participants", "Participants"], ["is_recording", "Recording"], ["is_muted", "Muted"],
    ["is_held", "On hold"], ["conference_id", "Conference"], ["disposition", "Disposition"],
  ];

  function show(value) {
    if (value === null || value === undefined) return "–";
    if (Array.isArray(value)) return value.join(", ") || "–";
    if (typeof value === "boolean") return value ? "yes" : "no";
    if (typeof value === "object") return Object.entries(value).map(([k, v]) => `${k}: ${show(v)}`).join(", ");
    return String(value);
  }

  function showClaimed(esc) {
    state.claimedId = esc.escalation_id;
    $("claimed").hidden = false;
    const dl = $("claimed-escalation");
    const pairs = [
      ["Escalation", esc.escalation_id], ["Call", esc.call_id], ["Reason", esc.reason],
      ["Urgency", esc.urgency], ["Claimed by", esc.supervisor_id], ["Claimed at", time(esc.claimed_at)],
    ];
    dl.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", null, k), el("dd", null, v)]));
    const tbody = $("call-state").querySelector("tbody");
    const cs = esc.call_state || {};
    tbody.replaceChildren(...STATE_ROWS.map(([key, label]) => {
      const tr = el("tr");
      tr.dataset.field = key;
      tr.append(el("td", null, label), el("td", null, show(cs[key])));
      return tr;
    }));
    $("claimed").dataset.callState = cs.state || "";
    $("state-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    clearTimeout(state.refreshTimer);
    if (cs.state && cs.state !== "ended") state.refreshTimer = setTimeout(refreshClaimed, 3000);
  }

  async function refreshClaimed() {
    if (!state.claimedId) return;
    const { status, data } = await api("GET", `/api/v1/escalations/${encodeURIComponent(state.claimedId)}`);
    if (status === 200) showClaimed(data);
  }

  // ------------------------------------------------------------ sign-in and duty

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    $("connect").disabled = true;
    state.apiKey = $("api-key").value.trim();
    state.supervisorId = $("supervisor-id").value.trim();
    state.hello = { type: "hello", api_key: state.apiKey, supervisor_id: state.supervisorId };
    const name = $("supervisor-name").value.trim();
    const contact = $("contact").value.trim();
    if (name) state.hello.name = name;
    if (contact) state.hello.contact = contact;
    connect();
  });

  $("duty").addEventListener("change", (ev) => {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) {
      state.ws.send(JSON.stringify({ type: "duty", on_duty: ev.target.checked }));
    }
  });

  $("refresh").addEventListener("click", refreshClaimed);
})();
