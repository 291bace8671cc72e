"""GET /metrics (bridge/metrics.py, docs/metrics.md): a sandbox bridge is driven through a call, a
few verbs (some refused) and a webhook delivery that is retried once, then scraped over HTTP and
parsed with prometheus-client's own parser; every counter must have moved by exactly what was done,
under the labels the docs name. Also: Redis failures are counted, the optional bearer token, two
bridges in one process keep their own numbers, and the Grafana dashboard and the docs name only
metrics that exist."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.api.admission import Admitter
from bridge.calls.voice_agents import VoiceAgentStore
from bridge.metrics import CONTENT_TYPE_LATEST, METRIC_NAMES, BridgeMetrics, redis_error_kind
from bridge.store.redis import StoreUnavailable
from tests.conftest import AgentServer
from tests.helpers import commands, control, end_call, http, sandbox_with, start_call, wait_until
from tests.webhook_receiver import Received, Receiver

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "bridge-dashboard.json"
DOCS = ROOT / "docs" / "metrics.md"


@pytest.fixture
async def sandbox(redis_url: str, redis: Any, tmp_path: Path) -> Any:
    # Many verbs on one call within a second; the webhook queue depth refreshed quickly.
    async with sandbox_with(redis_url, tmp_path, rate_limit_per_s=1000, metrics_refresh_s=0.05) as box:
        yield box


class Scrape:
    """One /metrics answer, parsed by prometheus-client's parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def series(self, name: str, **labels: str) -> list[Any]:
        return [s for s in self.samples if s.name == name and labels.items() <= s.labels.items()]

    def value(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include `labels` (0 for none)."""
        return sum(s.value for s in self.series(name, **labels))

    def one(self, name: str, **labels: str) -> float:
        """The value of the one series with exactly these labels (it must exist)."""
        found = [s for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, (name, labels, self.series(name))
        return found[0].value


async def scrape(sandbox: Any, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sandbox.info.base_url}/metrics", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
            return Scrape(await resp.text())


async def scraped_until(sandbox: Any, check: Any, timeout: float = 5.0) -> Scrape:
    async def probe() -> Scrape | None:
        got = await scrape(sandbox)
        return got if check(got) else None

    return await wait_until(probe, timeout=timeout, interval=0.03)


async def test_a_call_its_verbs_and_a_webhook_move_the_metrics_by_what_was_done(
    sandbox: Any, agent_server: AgentServer
) -> None:
    # The receiver holds the first attempt (so the delivery is seen in flight), then refuses it
    # with a 500: one retry, then delivered.
    release = asyncio.Event()

    async def held_then_refused(n: int, _r: Received) -> web.StreamResponse:
        if n == 0:
            await release.wait()
            return web.Response(status=500, text="not yet")
        return web.Response(status=200, text="ok")

    receiver = Receiver(held_then_refused)
    await receiver.start()
    try:
        body = {"url": receiver.url, "event_types": ["call.started"]}
        sub = await http(sandbox, "POST", "/api/v1/webhooks", body)
        assert sub.status == 201, sub.body

        box = sandbox.runtime.services.switches.default.id  # HOST:PORT of the simulator
        before = await scrape(sandbox)
        assert before.value("bridge_control_verbs_total") == 0
        assert before.value("bridge_live_sessions") == 0
        assert before.one("bridge_esl_connected", box=box) == 1

        call = await start_call(sandbox, agent_server)
        cid, tok = call.call_id, call.token
        agent = call.metadata["voice_agent_id"]
        live = await scrape(sandbox)
        assert live.one("bridge_live_sessions", box=box, voice_agent=agent) == 1

        # The webhook: in flight (held by the receiver) is one delivery waiting in Redis.
        async def attempted() -> bool:
            return len(receiver.requests) == 1

        await wait_until(attempted)
        await scraped_until(sandbox, lambda s: s.value("bridge_webhook_queue_depth", queue="deliveries") == 1)
        release.set()

        # Verbs: each answer says the status and code it must be counted under.
        replies = [
            await control(sandbox, cid, {"event": "mute"}, auth=tok),
            await control(sandbox, cid, {"event": "mute", "target": "agent"}, auth=tok),
            await control(sandbox, cid, {"event": "get_call_state"}, auth=tok),
            await control(sandbox, cid, {"event": "unmute"}, auth=tok, idempotency_key="k-1"),
            await control(sandbox, cid, {"event": "unmute"}, auth=tok, idempotency_key="k-1"),
            await control(sandbox, cid, {"event": "mute", "target": "nobody"}, auth=tok),
            await control(sandbox, cid, {"event": "no_such_verb"}, auth=tok),
            await control(sandbox, cid, {"event": "mute"}, auth="yt_cb_" + "x" * 40),
        ]
        statuses = [r.status for r in replies]
        assert statuses == [200, 200, 200, 200, 200, 400, 400, 401], [r.body for r in replies]
        assert replies[4].headers.get("Idempotent-Replayed") == "true"
        verbs = ["mute", "mute", "get_call_state", "unmute", "unmute", "mute", "unknown", "mute"]
        codes = ["ok", "ok", "ok", "ok", "replayed", "validation_error", "validation_error", replies[7].code]
        assert replies[5].code == replies[6].code == "validation_error" and replies[7].code
        expected = Counter(zip(verbs, [str(r.status) for r in replies], codes, strict=True))
        sent = commands(sandbox, cid)  # before the hangup: the simulator forgets the channel after

        after = await scraped_until(
            sandbox, lambda s: s.value("bridge_webhook_deliveries_total", result="delivered") == 1
        )
        got = {
            (s.labels["verb"], s.labels["status"], s.labels["code"]): s.value
            for s in after.series("bridge_control_verbs_total")
        }
        assert got == dict(expected)
        for verb in {"mute", "get_call_state", "unmute", "unknown"}:
            count = sum(n for (v, _, _), n in expected.items() if v == verb)
            assert after.one("bridge_control_verb_duration_seconds_count", verb=verb) == count
            assert after.one("bridge_control_verb_duration_seconds_bucket", verb=verb, le="+Inf") == count
            assert after.one("bridge_control_verb_duration_seconds_sum", verb=verb) > 0

        # ESL: exactly the commands the simulated switch received for the call, by first word.
        by_name = Counter(c.split(" ", 1)[0] for c in sent)
        assert by_name["uuid_answer"] == 1 and by_name["uuid_audio"] >= 3 and by_name["uuid_audio_fork"] == 1
        for name, n in by_name.items():
            assert after.value("bridge_esl_commands_total", box=box, command=name) == n, name
            assert after.one("bridge_esl_command_duration_seconds_count", box=box, command=name) == n
        assert after.one("bridge_esl_commands_total", box=box, command="uuid_answer", result="ok") == 1
        assert after.value("bridge_esl_commands_total", result="error") == 0

        # Webhooks: one retry (the 500), one delivery, two timed attempts.
        assert after.one("bridge_webhook_deliveries_total", result="retry") == 1
        assert after.one("bridge_webhook_deliveries_total", result="delivered") == 1
        assert after.value("bridge_webhook_deliveries_total", result="failed") == 0
        assert after.one("bridge_webhook_delivery_duration_seconds_count") == 2
        await scraped_until(sandbox, lambda s: s.one("bridge_webhook_queue_depth", queue="deliveries") == 0)

        # The caller hangs up: the session is no longer live.
        assert after.one("bridge_esl_events_total", box=box, event="CHANNEL_PARK") >= 1
        assert after.value("bridge_esl_events_total", box=box, event="CHANNEL_HANGUP_COMPLETE") == 0
        await end_call(sandbox, cid)
        ended = await scraped_until(
            sandbox, lambda s: s.one("bridge_live_sessions", box=box, voice_agent=agent) == 0
        )
        assert ended.one("bridge_esl_events_total", box=box, event="CHANNEL_HANGUP_COMPLETE") == 1
        assert ended.value("bridge_redis_errors_total") == 0
        # Bounded labels: no call id, no tenant, no token anywhere in what a scrape carries.
        for secret in (cid, "acme", tok):
            assert secret not in ended.text
    finally:
        release.set()
        await receiver.stop()


async def test_redis_failures_are_counted_by_component_and_kind(
    sandbox: Any, agent_server: AgentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    call = await start_call(sandbox, agent_server)

    async def refused(*_a: Any, **_k: Any) -> Any:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(VoiceAgentStore, "list", refused)
    reply = await http(sandbox, "GET", "/api/v1/voice-agents")
    assert (reply.status, reply.code) == (503, "store_unavailable")

    # A verb whose admission script cannot reach Redis: a 503 verb and a Redis error.
    monkeypatch.setattr(Admitter, "admit", refused)
    reply = await control(sandbox, call.call_id, {"event": "mute"}, auth=call.token)
    assert (reply.status, reply.code) == (503, "store_unavailable")

    async def timed_out(*_a: Any, **_k: Any) -> None:
        raise StoreUnavailable("Timeout") from RedisTimeoutError("Timeout reading from socket")

    monkeypatch.setattr("bridge.api.routes.health.ping", timed_out)
    async with aiohttp.ClientSession() as session, session.get(f"{sandbox.info.base_url}/healthz") as resp:
        assert resp.status == 503

    got = await scrape(sandbox)
    assert got.one("bridge_redis_errors_total", component="api", error="connection") == 2
    assert got.one("bridge_redis_errors_total", component="healthz", error="timeout") == 1
    assert got.one("bridge_control_verbs_total", verb="mute", status="503", code="store_unavailable") == 1


def test_what_counts_as_a_redis_error_and_of_which_kind() -> None:
    assert redis_error_kind(RedisTimeoutError("x")) == "timeout"
    assert redis_error_kind(RedisConnectionError("x")) == "connection"
    try:
        raise StoreUnavailable("late") from TimeoutError()
    except StoreUnavailable as exc:
        assert redis_error_kind(exc) == "timeout"
    assert redis_error_kind(StoreUnavailable("down")) == "connection"
    assert redis_error_kind(ValueError("not redis")) is None
    assert redis_error_kind(ConnectionResetError("a client went away")) is None


def test_label_values_come_from_the_code_never_from_values() -> None:
    m = BridgeMetrics(process=False)
    m.esl_command("fs1", "uuid_kill 0b1f-uuid NORMAL_CLEARING", "ok", 0.001)
    m.esl_command("fs1", "Not A Command", "error", 0.001)
    m.esl_event("fs1", "CHANNEL_ANSWER")
    m.esl_event("fs1", "some::custom_subclass")
    m.esl_event("fs1", "another::unknown")
    m.session_started("c1", box="fs1", voice_agent=None)
    m.session_started("c1", box="fs1", voice_agent=None)  # once per session
    m.session_ended("c1")
    m.session_ended("c1")
    m.session_started("c2", box="fs1", voice_agent="va_1")
    m.session_started("c3", box="fs2", voice_agent="va_1")
    m.sessions_handed_over("fs1")  # another bridge handles fs1 now
    got = Scrape(m.render().decode())
    assert {s.labels["command"] for s in got.series("bridge_esl_commands_total")} == {"uuid_kill", "other"}
    events = {s.labels["event"] for s in got.series("bridge_esl_events_total", box="fs1")}
    assert events == {"CHANNEL_ANSWER", "other"}
    assert got.one("bridge_esl_events_total", box="fs1", event="other") == 2
    assert got.one("bridge_live_sessions", box="fs1", voice_agent="none") == 0
    assert got.one("bridge_live_sessions", box="fs1", voice_agent="va_1") == 0
    assert got.one("bridge_live_sessions", box="fs2", voice_agent="va_1") == 1
    assert "0b1f" not in got.text and "custom_subclass" not in got.text


async def test_a_metrics_token_is_required_when_set_and_each_bridge_counts_its_own(
    sandbox: Any, redis_url: str, tmp_path: Path, agent_server: AgentServer
) -> None:
    async with sandbox_with(redis_url, tmp_path / "other", metrics_token="s3cret-scrape") as guarded:
        url = f"{guarded.info.base_url}/metrics"
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-scrape"}):
                async with session.get(url, headers=headers) as resp:
                    assert resp.status == 401
                    assert (await resp.json())["detail"]["code"] == "unauthorized"
        assert (await scrape(guarded, token="s3cret-scrape")).value("bridge_esl_connected") == 1

        # Two bridges in one process, each on a registry of its own: a call on one is not on the other.
        assert sandbox.runtime.services.metrics.registry is not guarded.runtime.services.metrics.registry
        await start_call(sandbox, agent_server)
        assert (await scrape(sandbox)).value("bridge_live_sessions") == 1
        assert (await scrape(guarded, token="s3cret-scrape")).value("bridge_live_sessions") == 0
    # The unguarded one needs nothing.
    await scrape(sandbox)


# ---------------------------------------------------------------- METRIC_NAMES, the docs, the dashboard


def _registry_names(m: BridgeMetrics) -> dict[str, str]:
    names = {}
    for family in m.registry.collect():
        if not family.name.startswith("bridge_"):
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        names[name] = family.type
    return names


def test_metric_names_lists_exactly_what_the_registry_holds() -> None:
    assert _registry_names(BridgeMetrics(process=False)) == METRIC_NAMES
    for name, kind in METRIC_NAMES.items():
        assert name.startswith("bridge_")
        assert name.endswith("_total") is (kind == "counter"), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name


def test_every_metric_is_documented_with_its_type() -> None:
    text = DOCS.read_text()
    rows = dict(re.findall(r"^\| `(bridge_[a-z_]+)` \| (counter|gauge|histogram) \|", text, re.M))
    assert rows == METRIC_NAMES


def _exprs(panels: list[dict[str, Any]]) -> list[str]:
    found = []
    for panel in panels:
        found += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
        found += _exprs(panel.get("panels", []))
    return found


def test_the_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["schemaVersion"] >= 30 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    panels = dashboard["panels"]
    exprs = _exprs(panels)
    exprs += [v["definition"] for v in variables.values() if v["type"] == "query"]
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        for name in re.findall(r"\bbridge_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base in METRIC_NAMES, f"{name} in {expr!r} is not defined in bridge/metrics.py"
            if name != base:
                assert METRIC_NAMES[base] == "histogram", name
            used.add(base)
    assert used == set(METRIC_NAMES), "a metric the dashboard does not show"
    for panel in panels:
        if panel.get("type") != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


async def test_a_live_call_this_bridge_did_not_start_is_counted_once_it_resyncs_its_box(
    sandbox: Any, agent_server: AgentServer
) -> None:
    call = await start_call(sandbox, agent_server)
    svc = sandbox.runtime.services
    box = svc.switches.default.id
    agent = call.metadata["voice_agent_id"]
    # As after a restart or a takeover: this process knows nothing of the call...
    svc.metrics.sessions_handed_over(box)
    assert (await scrape(sandbox)).one("bridge_live_sessions", box=box, voice_agent=agent) == 0
    # ...until the resync that follows finds it live on the box; a second resync adds nothing.
    await svc.calls.resync.run(svc.switches.default)
    await svc.calls.resync.run(svc.switches.default)
    assert (await scrape(sandbox)).one("bridge_live_sessions", box=box, voice_agent=agent) == 1
    await end_call(sandbox, call.call_id)
    await scraped_until(sandbox, lambda s: s.one("bridge_live_sessions", box=box, voice_agent=agent) == 0)
