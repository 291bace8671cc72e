"""Every Prometheus metric the bridge exports (`GET /metrics`; docs/metrics.md lists them).

One `BridgeMetrics` per running bridge (bridge.services.Services owns it), each on a
`CollectorRegistry` of its own: the tests and the benchmarks start several bridges in one process,
and prometheus-client's global registry would refuse the second set of names (or mix the numbers).

Label values come from the code, never from a request: verb names, HTTP statuses and error codes,
the first word of an ESL command, event names from the subscription list (anything else is
`other`), the FreeSWITCH box's name, the voice agent's id. No call id, no tenant id.

The control path counts each verb with one cached child lookup, one `inc` and one `observe`; the
ESL layer the same per command. prometheus-client's own lock per update is all the locking there is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.esl.client import DEFAULT_EVENTS
from bridge.store.redis import StoreUnavailable

if TYPE_CHECKING:
    from bridge.esl.client import EslClient

# No `<name>_created` series beside every counter and histogram: they would double what a scrape
# carries and Prometheus does not need them (process-wide switch of prometheus-client).
disable_created_metrics()

__all__ = ["CONTENT_TYPE_LATEST", "METRIC_NAMES", "BridgeMetrics", "redis_error_kind"]

# Seconds. The control path answers in a few ms; an ESL command in well under one; `originate`
# (bgapi) waits for the far end to answer, hence the long tail.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The events the bridge subscribes to (bridge.esl.client.DEFAULT_EVENTS) are the `event` label's
# values; any other name or CUSTOM subclass is counted as `other`.
KNOWN_EVENTS = frozenset(name for name in DEFAULT_EVENTS if name != "CUSTOM")
OTHER = "other"
# ESL command names are the first word of a Command built in code (bridge.calls.commands); the
# bound is a guard against a bug putting a value there, not a limit anyone should reach.
_COMMAND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_MAX_COMMAND_NAMES = 100

# Webhook attempt outcomes (bridge.webhooks.deliveries states) as the `result` label says them.
WEBHOOK_RESULTS = {"delivered": "delivered", "retrying": "retry", "dead": "failed"}

# Every metric family this module defines, as Prometheus names it (counters end in _total; a
# histogram's series add _bucket, _count and _sum). The dashboard test checks its queries against it.
METRIC_NAMES: dict[str, str] = {
    "bridge_control_verbs_total": "counter",
    "bridge_control_verb_duration_seconds": "histogram",
    "bridge_esl_commands_total": "counter",
    "bridge_esl_command_duration_seconds": "histogram",
    "bridge_esl_events_total": "counter",
    "bridge_esl_events_dropped_total": "counter",
    "bridge_esl_connected": "gauge",
    "bridge_live_sessions": "gauge",
    "bridge_webhook_deliveries_total": "counter",
    "bridge_webhook_delivery_duration_seconds": "histogram",
    "bridge_webhook_queue_depth": "gauge",
    "bridge_redis_errors_total": "counter",
}


def redis_error_kind(exc: BaseException) -> str | None:
    """`timeout`, `connection` or `error` for a Redis failure (StoreUnavailable included, judged
    by its cause); None for anything that is not one."""
    if isinstance(exc, StoreUnavailable):
        cause = exc.__cause__
        return _kind(cause) if cause is not None else "connection"
    if isinstance(exc, RedisError):
        return _kind(exc)
    return None


def _kind(exc: BaseException) -> str:
    if isinstance(exc, (RedisTimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, (RedisConnectionError, OSError)):
        return "connection"
    return "error"


class BridgeMetrics:
    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        if process:
            # process_*, python_*: CPU, memory, file descriptors, GC of this process.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

        self.control_verbs = Counter(
            "bridge_control_verbs",
            "Control requests answered, by verb, HTTP status and error code (ok, replayed, or the "
            "error envelope's code)",
            ["verb", "status", "code"],
            registry=r,
        )
        self.control_duration = Histogram(
            "bridge_control_verb_duration_seconds",
            "Time from the control request's arrival in the pipeline to its answer, by verb",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.esl_commands = Counter(
            "bridge_esl_commands",
            "ESL api/bgapi commands sent, by box, command name (first word) and result "
            "(ok, error: -ERR, timeout, disconnected)",
            ["box", "command", "result"],
            registry=r,
        )
        self.esl_duration = Histogram(
            "bridge_esl_command_duration_seconds",
            "Time from sending an ESL command to its reply (bgapi: to its BACKGROUND_JOB), "
            "by box and command",
            ["box", "command"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.esl_events = Counter(
            "bridge_esl_events",
            "ESL events handled by this bridge's call layer (the boxes whose lease it holds), by box and "
            "Event-Name (CUSTOM: the subclass); names the bridge does not subscribe to: other",
            ["box", "event"],
            registry=r,
        )
        self.live_sessions = Gauge(
            "bridge_live_sessions",
            "AI sessions this process started that have not ended, by box and voice agent id",
            ["box", "voice_agent"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "bridge_webhook_deliveries",
            "Webhook delivery attempts, by result: delivered, retry (failed, another attempt is due), "
            "failed (no attempt left, or the subscription is paused)",
            ["result"],
            registry=r,
        )
        self.webhook_duration = Histogram(
            "bridge_webhook_delivery_duration_seconds",
            "Duration of one webhook HTTP attempt (timeouts included)",
            buckets=WEBHOOK_BUCKETS,
            registry=r,
        )
        self.webhook_queue = Gauge(
            "bridge_webhook_queue_depth",
            "Webhook work waiting in Redis, shared by every instance: outbox (events not yet fanned "
            "out) and deliveries (not yet delivered: due, retrying or being sent)",
            ["queue"],
            registry=r,
        )
        self.redis_errors = Counter(
            "bridge_redis_errors",
            "Redis failures caught, by component and kind (timeout, connection, error)",
            ["component", "error"],
            registry=r,
        )
        self._switches = _SwitchCollector(registry=r)

        self._verbs: dict[tuple[str, int, str], tuple[Any, Any]] = {}
        self._commands: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._command_names: dict[str, str] = {}
        self._events: dict[str, dict[str, Any]] = {}
        self._live: dict[str, tuple[str, Any]] = {}

    # ------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The Prometheus text format (content type CONTENT_TYPE_LATEST)."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------ control verbs

    def verb(self, verb: str, status: int, code: str, seconds: float) -> None:
        key = (verb, status, code)
        children = self._verbs.get(key)
        if children is None:
            children = self._verbs[key] = (
                self.control_verbs.labels(verb, str(status), code),
                self.control_duration.labels(verb),
            )
        children[0].inc()
        children[1].observe(seconds)

    # ------------------------------------------------------------ ESL

    def esl_command(self, box: str, command: str, result: str, seconds: float) -> None:
        """`command` is the whole command line: only its first word becomes a label."""
        name = command.split(" ", 1)[0]
        name = self._command_names.get(name) or self._command_name(name)
        key = (box, name, result)
        children = self._commands.get(key)
        if children is None:
            children = self._commands[key] = (
                self.esl_commands.labels(box, name, result),
                self.esl_duration.labels(box, name),
            )
        children[0].inc()
        children[1].observe(seconds)

    def _command_name(self, name: str) -> str:
        if not _COMMAND_NAME.match(name) or len(self._command_names) >= _MAX_COMMAND_NAMES:
            return OTHER
        self._command_names[name] = name
        return name

    def esl_event(self, box: str, key: str) -> None:
        children = self._events.get(box)
        if children is None:
            children = self._events[box] = {}
        child = children.get(key)
        if child is None:
            if key not in KNOWN_EVENTS:  # not cached under its own name: the dict stays bounded
                key = OTHER
                child = children.get(key)
            if child is None:
                child = children[key] = self.esl_events.labels(box, key)
        child.inc()

    def watch_switch(self, box: str, esl: EslClient) -> None:
        """bridge_esl_connected and bridge_esl_events_dropped_total for this box, read at scrape time."""
        self._switches.boxes[box] = esl

    # ------------------------------------------------------------ sessions

    def session_started(self, call_id: str, *, box: str, voice_agent: str | None) -> None:
        if call_id in self._live:
            return
        child = self.live_sessions.labels(box, voice_agent or "none")
        child.inc()
        self._live[call_id] = (box, child)

    def counts_session(self, call_id: str) -> bool:
        return call_id in self._live

    def session_ended(self, call_id: str) -> None:
        """Once per started session, whoever calls it first; any other call is a no-op."""
        found = self._live.pop(call_id, None)
        if found is not None:
            found[1].dec()

    def sessions_handed_over(self, box: str) -> None:
        """This process no longer handles the box's events (its lease was lost or handed back):
        the bridge that takes the box over counts its sessions from now on (bridge.calls.resync)."""
        for call_id in [c for c, (b, _) in self._live.items() if b == box]:
            self.session_ended(call_id)

    # ------------------------------------------------------------ webhooks

    def webhook_attempt(self, state: str, seconds: float | None) -> None:
        self.webhook_deliveries.labels(WEBHOOK_RESULTS.get(state, OTHER)).inc()
        if seconds is not None:
            self.webhook_duration.observe(seconds)

    def webhook_queue_depth(self, outbox: int, deliveries: int) -> None:
        self.webhook_queue.labels("outbox").set(outbox)
        self.webhook_queue.labels("deliveries").set(deliveries)

    # ------------------------------------------------------------ Redis

    def redis_error(self, component: str, exc: BaseException) -> bool:
        """Count `exc` if it is a Redis failure; True when it was one."""
        kind = redis_error_kind(exc)
        if kind is None:
            return False
        self.redis_errors.labels(component, kind).inc()
        return True


class _SwitchCollector:
    """What the ESL clients already hold (connected, events dropped), read when Prometheus scrapes."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.boxes: dict[str, EslClient] = {}
        registry.register(self)

    def describe(self) -> Iterable[Any]:
        return list(self._families({}))

    def collect(self) -> Iterator[Any]:
        yield from self._families(self.boxes)

    @staticmethod
    def _families(boxes: dict[str, EslClient]) -> Iterator[Any]:
        connected = GaugeMetricFamily(
            "bridge_esl_connected", "1 while the ESL connection to the box is up", labels=["box"]
        )
        dropped = CounterMetricFamily(
            "bridge_esl_events_dropped",
            "ESL events dropped because the client's event queue was full",
            labels=["box"],
        )
        for box, esl in boxes.items():
            connected.add_metric([box], 1.0 if esl.connected else 0.0)
            dropped.add_metric([box], float(esl.dropped_events))
        yield connected
        yield dropped

