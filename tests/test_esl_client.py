"""The inbound ESL client against a fake ESL server that speaks real framing and replays frames
from the lab captures (/work/shared/esl-captures)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bridge.esl.client import (
    DEFAULT_EVENTS,
    EslAuthError,
    EslClient,
    EslCommandError,
    EslConnectionError,
    EslTimeout,
    subscription_command,
)
from bridge.esl.protocol import Event, encode_frame

try:
    from tests.fake_esl import (
        CAPTURES,
        Command,
        FakeConnection,
        FakeEsl,
        api_response,
        captured_job_uuid,
        command_reply,
        disconnect_notice,
        json_event,
        load_capture,
        rude_rejection,
    )
except ImportError:  # run with plain `pytest`: tests/ itself is on sys.path
    from fake_esl import (  # type: ignore[no-redef]
        CAPTURES,
        Command,
        FakeConnection,
        FakeEsl,
        api_response,
        captured_job_uuid,
        command_reply,
        disconnect_notice,
        json_event,
        load_capture,
        rude_rejection,
    )

pytestmark = pytest.mark.timeout(10)
needs_captures = pytest.mark.skipif(not CAPTURES.is_dir(), reason=f"no ESL captures at {CAPTURES}")

NO_SUCH_UUID = "00000000-0000-0000-0000-000000000000"


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def heartbeat(seq: int) -> bytes:
    return json_event({"Event-Name": "HEARTBEAT", "Event-Sequence": str(seq), "Event-Info": "System Ready"})


class Recorder:
    """An event handler plus connection listeners that remember what they saw."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.tasks: set[str] = set()
        self.ups = 0
        self.downs: list[Exception] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        task = asyncio.current_task()
        self.tasks.add(task.get_name() if task else "?")

    async def on_up(self) -> None:
        self.ups += 1

    async def on_down(self, exc: Exception) -> None:
        self.downs.append(exc)

    def names(self, skip: tuple[str, ...] = ("HEARTBEAT",)) -> list[str]:
        return [e.name for e in self.events if e.name not in skip]


@pytest.fixture
async def server() -> AsyncIterator[FakeEsl]:
    fake = await FakeEsl().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def make_client(server: FakeEsl) -> AsyncIterator[Callable[..., EslClient]]:
    clients: list[EslClient] = []

    def make(**kw: Any) -> EslClient:
        password = kw.pop("password", "ClueCon")
        options: dict[str, Any] = {
            "command_timeout": 1.0,
            "backoff_initial": 0.01,
            "backoff_max": 0.05,
            "heartbeat_timeout": 5.0,
        }
        options.update(kw)
        client = EslClient("127.0.0.1", server.port, password, **options)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.close()


@pytest.fixture
async def client(make_client: Callable[..., EslClient]) -> EslClient:
    c = make_client()
    await c.start(wait=2)
    return c


# ---------------------------------------------------------------- login and subscription


async def test_login_subscribes_with_event_json_and_custom_subclasses_last(
    server: FakeEsl, client: EslClient
):
    conn = await server.subscribed()
    assert client.connected
    assert [c.line for c in conn.commands] == ["auth ClueCon", conn.subscription]
    assert conn.subscription == "event json " + " ".join(DEFAULT_EVENTS)
    tokens = conn.subscription.split()[2:]
    custom = tokens.index("CUSTOM")
    assert all("::" not in t for t in tokens[:custom]) and all("::" in t for t in tokens[custom + 1 :])
    for name in ("HEARTBEAT", "BACKGROUND_JOB", "CHANNEL_PARK", "CHANNEL_HANGUP_COMPLETE", "DTMF"):
        assert name in tokens[:custom]
    for sub in ("conference::maintenance", "callcenter::info", "mod_audio_fork::connect"):
        assert sub in tokens[custom + 1 :]
    assert sum(t.startswith("mod_audio_fork::") for t in tokens) == 10
    assert not any(c.word == "myevents" for c in server.log)


def test_subscription_reorders_custom_last_and_keeps_what_the_client_needs():
    assert subscription_command(["CUSTOM", "a::b", "CHANNEL_ANSWER", "x::y", "DTMF"]) == (
        "event json CHANNEL_ANSWER DTMF BACKGROUND_JOB HEARTBEAT CUSTOM a::b x::y"
    )
    assert subscription_command(["ALL"]) == "event json ALL"
    assert subscription_command(["CHANNEL_ANSWER", "CUSTOM sofia::register"]) == (
        "event json CHANNEL_ANSWER BACKGROUND_JOB HEARTBEAT CUSTOM sofia::register"
    )


async def test_wrong_password_raises_and_keeps_retrying_until_it_is_fixed(
    server: FakeEsl, make_client: Callable[..., EslClient]
):
    server.password = "other"
    client = make_client()
    with pytest.raises(EslAuthError, match="refused the ESL password"):
        await client.start(wait=0.3)
    assert isinstance(EslAuthError("x"), EslConnectionError)
    attempts = [c for c in server.log if c.word == "auth"]
    assert len(attempts) >= 2 and all(c.line == "auth ClueCon" for c in attempts)
    assert not client.connected
    with pytest.raises(EslConnectionError):
        await client.api("status")

    server.password = "ClueCon"  # the operator fixes the password: the retry loop gets in
    await wait_until(lambda: client.connected)
    server.api_bodies["status"] = "UP 0 years\n"
    assert await client.api("status") == "UP 0 years"


async def test_wrong_password_without_reconnect_fails_at_once(
    server: FakeEsl, make_client: Callable[..., EslClient]
):
    server.password = "other"
    client = make_client(reconnect=False)
    started = time.monotonic()
    with pytest.raises(EslAuthError, match=r"-ERR invalid"):
        await client.start(wait=5)
    assert time.monotonic() - started < 1.0
    assert len([c for c in server.log if c.word == "auth"]) == 1


async def test_acl_rude_rejection_is_reported(server: FakeEsl, make_client: Callable[..., EslClient]):
    server.greeting = rude_rejection()
    server.close_after_greeting = True
    client = make_client(reconnect=False)
    with pytest.raises(EslAuthError, match="Access Denied, go away"):
        await client.start(wait=2)
    assert server.log == []  # not even the password was sent


async def test_start_without_wait_returns_at_once_and_connects_when_the_switch_appears(
    make_client: Callable[..., EslClient],
):
    placeholder = await FakeEsl().start()
    port = placeholder.port
    await placeholder.stop()  # nothing listens on `port` now
    client = EslClient("127.0.0.1", port, "ClueCon", backoff_initial=0.01, backoff_max=0.05)
    try:
        started = time.monotonic()
        await client.start(wait=None)
        assert time.monotonic() - started < 0.05 and not client.connected
        late = await FakeEsl().start(port)
        try:
            await late.subscribed()
            await wait_until(lambda: client.connected)
        finally:
            await late.stop()
    finally:
        await client.close()


def test_from_url():
    client = EslClient.from_url("esl://:s3cret@10.1.2.3:8022", command_timeout=3.0)
    assert (client.host, client.port, client.password, client.command_timeout) == (
        "10.1.2.3",
        8022,
        "s3cret",
        3.0,
    )


# ---------------------------------------------------------------- api and plain commands


CAPTURE_11 = load_capture("11_nonexistent_uuid.txt") if CAPTURES.is_dir() else []


@needs_captures
@pytest.mark.parametrize("step", CAPTURE_11, ids=lambda s: s.sent.split()[1])
async def test_api_replays_capture_11_replies(server: FakeEsl, client: EslClient, step: Any):
    """Real FreeSWITCH replies for a uuid that does not exist: errors raise, `+OK` (uuid_hold!)
    comes back as text."""
    command = step.sent.removeprefix("api ")
    server.api_bodies[command] = step.reply  # the exact bytes FreeSWITCH wrote
    body = step.reply.split(b"\n\n", 1)[1].decode()
    if body.startswith("-"):
        with pytest.raises(EslCommandError) as exc:
            await client.api(command)
        assert exc.value.reply == body.strip()
        assert exc.value.reply in (
            "-ERR No such channel!",
            "-ERR invalid uuid",
            "-ERR Cannot locate session!",
        )
        assert exc.value.command == command
        assert await client.api(command, check=False) == body.rstrip("\n")
    else:
        assert await client.api(command) == "+OK Success"


async def test_api_usage_error_raises(server: FakeEsl, client: EslClient):
    server.api_bodies["uuid_kill"] = "-USAGE: <uuid> [cause]\n"
    with pytest.raises(EslCommandError) as exc:
        await client.api("uuid_kill")
    assert exc.value.reply == "-USAGE: <uuid> [cause]"
    with pytest.raises(EslCommandError, match="Command not found"):
        await client.api("no_such_api")


async def test_api_returns_multiline_body_without_the_trailing_newline(server: FakeEsl, client: EslClient):
    server.api_bodies["show channels as json"] = '{"row_count":0}\n'
    server.api_bodies[f"uuid_exists {NO_SUCH_UUID}"] = "false"
    assert await client.api("show channels as json") == '{"row_count":0}'
    assert await client.api(f"uuid_exists {NO_SUCH_UUID}") == "false"


async def test_command_returns_the_reply_frame_and_raises_on_err(server: FakeEsl, client: EslClient):
    def sendevent(conn: FakeConnection, cmd: Command) -> None:
        ok = cmd.headers.get("Event-Subclass") == "bridge::test"
        conn.send(command_reply("+OK 7f3c" if ok else "-ERR invalid event"))

    server.handlers["sendevent"] = sendevent
    frame = await client.command("filter Unique-ID abc")
    assert frame.reply_text == "+OK filter added. [Unique-ID]=[abc]"
    frame = await client.command("sendevent CUSTOM", {"Event-Subclass": "bridge::test"})
    assert frame.reply_text == "+OK 7f3c"
    assert server.log[-1].headers == {"Event-Subclass": "bridge::test"}
    with pytest.raises(EslCommandError) as exc:
        await client.command("sendevent CUSTOM", {"Event-Subclass": "other"})
    assert exc.value.reply == "-ERR invalid event" and exc.value.command == "sendevent CUSTOM"
    with pytest.raises(EslCommandError, match="command not found"):
        await client.command("bogus")


async def test_myevents_is_refused_on_the_shared_connection(server: FakeEsl, client: EslClient):
    with pytest.raises(ValueError, match="myevents"):
        await client.command(f"myevents {NO_SUCH_UUID} json")
    assert not any(c.word == "myevents" for c in server.log)
    with pytest.raises(ValueError):
        await client.command("sendmsg x", {"evil": "a\n\nmyevents"})


async def test_concurrent_api_calls_each_get_their_own_reply(server: FakeEsl, client: EslClient):
    conn = await server.subscribed()
    server.hold = {"api"}
    calls = [asyncio.create_task(client.api(f"echo {i}")) for i in range(25)]
    held = [await conn.next_held() for _ in calls]
    # Answer everything in one burst, in the order the commands arrived, with events in between.
    frames: list[bytes] = []
    for n, cmd in enumerate(held):
        frames.append(api_response(f"reply to {cmd.args}\n"))
        frames.append(heartbeat(n))
    conn.send(*frames)
    results = await asyncio.gather(*calls)
    assert results == [f"reply to echo {i}" for i in range(25)]


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_a_caller_that_gave_up_leaves_a_tombstone_for_its_late_reply(
    server: FakeEsl, client: EslClient, how: str
):
    conn = await server.subscribed()
    server.hold = {"api"}
    if how == "timeout":
        with pytest.raises(EslTimeout, match="api slow"):
            await client.api("slow thing", timeout=0.1)
        slow = await conn.next_held()
    else:
        task = asyncio.create_task(client.api("slow thing", timeout=5))
        slow = await conn.next_held()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert slow.line == "api slow thing"

    fast = asyncio.create_task(client.api("fast thing"))
    assert (await conn.next_held()).line == "api fast thing"
    conn.send(api_response("the SLOW reply\n"), api_response("the fast reply\n"))
    assert await fast == "the fast reply"
    assert client.connected and len(server.connections) == 1


# ---------------------------------------------------------------- bgapi


CAPTURE_10 = load_capture("10_bgapi_background_job.txt") if CAPTURES.is_dir() else []


def replay_bgapi(captured: dict[str, Any]) -> Callable[[FakeConnection, Command], None]:
    """Answer a bgapi with the frames FreeSWITCH wrote for the same command in capture 10, the
    capture's Job-UUID replaced by the client's (same length, so every Content-Length holds)."""

    def handler(conn: FakeConnection, cmd: Command) -> None:
        step = captured[cmd.args]
        job_uuid = cmd.headers["Job-UUID"]
        old = captured_job_uuid(step).encode()
        conn.send(*(frame.replace(old, job_uuid.encode()) for frame in step.wire))

    return handler


@needs_captures
async def test_bgapi_originate_replays_capture_10_end_to_end(server: FakeEsl, client: EslClient):
    step = CAPTURE_10[0]
    assert step.sent.startswith("bgapi originate")
    command = step.sent.removeprefix("bgapi ")
    server.handlers["bgapi"] = replay_bgapi({command: step})
    seen = Recorder()
    client.add_event_handler(seen)

    assert await client.bgapi(command) == "+OK d1492b8d-0d96-43e5-b6cd-786978cf5526"

    sent = server.log[-1]
    job_uuid = sent.headers["Job-UUID"]
    assert sent.line == step.sent and uuid.UUID(job_uuid).version == 4
    # Every captured event (event-plain, as the lab subscribed) reaches the handlers, in order,
    # BACKGROUND_JOB included.
    await wait_until(lambda: len(seen.events) == len(step.after))
    captured_sequence = [f.split(b"Event-Sequence: ")[1].split(b"\n")[0].decode() for f in step.after]
    assert [e.get("Event-Sequence") for e in seen.events] == captured_sequence
    job = next(e for e in seen.events if e.name == "BACKGROUND_JOB")
    assert job.get("Job-UUID") == job_uuid and job.get("Job-Command") == "originate"
    assert job.body == "+OK d1492b8d-0d96-43e5-b6cd-786978cf5526\n"


@needs_captures
async def test_bgapi_results_and_errors_from_capture_10(server: FakeEsl, client: EslClient):
    status, kill = CAPTURE_10[1], CAPTURE_10[2]
    assert status.sent == "bgapi status" and kill.sent == f"bgapi uuid_kill {NO_SUCH_UUID}"
    server.handlers["bgapi"] = replay_bgapi({s.sent.removeprefix("bgapi "): s for s in (status, kill)})

    result = await client.bgapi("status")
    assert result.startswith("UP 0 years") and result.endswith("Current Stack Size/Max 240K/8192K")
    with pytest.raises(EslCommandError) as exc:
        await client.bgapi(f"uuid_kill {NO_SUCH_UUID}")
    assert exc.value.reply == "-ERR No such channel!"
    assert exc.value.command == f"uuid_kill {NO_SUCH_UUID}"
    assert await client.bgapi(f"uuid_kill {NO_SUCH_UUID}", check=False) == "-ERR No such channel!"


async def test_bgapi_jobs_resolve_by_job_uuid_not_by_order(server: FakeEsl, client: EslClient):
    conn = await server.subscribed()
    server.hold = {"bgapi"}
    first = asyncio.create_task(client.bgapi("job one", job_uuid="aaaaaaaa-0000-4000-8000-000000000001"))
    second = asyncio.create_task(client.bgapi("job two"))
    one, two = await conn.next_held(), await conn.next_held()
    assert one.headers["Job-UUID"] == "aaaaaaaa-0000-4000-8000-000000000001"
    conn.send(*(command_reply(f"+OK Job-UUID: {c.headers['Job-UUID']}", c.headers) for c in (one, two)))
    # The second job finishes first; the uuid is upper-cased to show the match ignores case.
    conn.send(
        json_event({"Event-Name": "BACKGROUND_JOB", "Job-UUID": two.headers["Job-UUID"].upper()}, "+OK 2\n")
    )
    assert await second == "+OK 2"
    assert not first.done()
    conn.send(json_event({"Event-Name": "BACKGROUND_JOB", "Job-UUID": one.headers["Job-UUID"]}, "+OK 1\n"))
    assert await first == "+OK 1"


async def test_bgapi_times_out_waiting_for_its_job_and_ignores_the_late_event(
    server: FakeEsl, client: EslClient
):
    conn = await server.subscribed()
    seen = Recorder()
    client.add_event_handler(seen)
    with pytest.raises(EslTimeout, match="no BACKGROUND_JOB for bgapi originate"):
        await client.bgapi("originate sofia/gateway/x/1 &park", timeout=0.15)
    job_uuid = server.log[-1].headers["Job-UUID"]
    conn.send(json_event({"Event-Name": "BACKGROUND_JOB", "Job-UUID": job_uuid}, "+OK late\n"))
    await wait_until(lambda: any(e.name == "BACKGROUND_JOB" for e in seen.events))
    server.job_bodies["status"] = "UP\n"
    assert await client.bgapi("status") == "UP"
    assert client.connected and len(server.connections) == 1


async def test_bgapi_refused_outright_raises_without_waiting_for_a_job(server: FakeEsl, client: EslClient):
    server.handlers["bgapi"] = lambda conn, cmd: conn.send(command_reply("-ERR permission denied"))
    started = time.monotonic()
    with pytest.raises(EslCommandError) as exc:
        await client.bgapi("originate x", timeout=5)
    assert exc.value.reply == "-ERR permission denied" and time.monotonic() - started < 1
    assert await client.bgapi("originate x", check=False, timeout=5) == "-ERR permission denied"


# ---------------------------------------------------------------- events


async def test_events_reach_handlers_in_order_from_the_dispatcher_task(server: FakeEsl, client: EslClient):
    conn = await server.subscribed()
    first, second = Recorder(), Recorder()
    client.add_event_handler(first)
    client.add_event_handler(second)
    frames = [
        json_event({"Event-Name": "DTMF", "DTMF-Digit": str(i % 10), "Event-Sequence": str(i)})
        for i in range(200)
    ]
    conn.send(*frames)
    await wait_until(lambda: len(second.events) == 200)
    assert [e.get("Event-Sequence") for e in first.events] == [str(i) for i in range(200)]
    assert [e.get("Event-Sequence") for e in second.events] == [str(i) for i in range(200)]
    assert first.tasks == {"esl-dispatch"}  # never the reader ("esl-connection")


async def test_a_failing_handler_is_logged_and_skipped(server: FakeEsl, client: EslClient):
    conn = await server.subscribed()
    seen = Recorder()

    def broken(event: Event) -> None:
        if event.get("Event-Sequence") == "1":
            raise RuntimeError("handler bug")

    client.add_event_handler(broken)
    client.add_event_handler(seen)
    conn.send(*(heartbeat(i) for i in range(3)))
    await wait_until(lambda: len(seen.events) == 3)
    assert [e.get("Event-Sequence") for e in seen.events] == ["0", "1", "2"]
    assert client.connected


async def test_async_handlers_are_rejected(client: EslClient):
    async def handler(event: Event) -> None: ...

    with pytest.raises(TypeError):
        client.add_event_handler(handler)  # type: ignore[arg-type]


async def test_a_slow_handler_does_not_delay_api_replies(server: FakeEsl, client: EslClient):
    conn = await server.subscribed()
    server.hold = {"api"}
    handled: list[Event] = []

    def slow(event: Event) -> None:
        time.sleep(0.02)  # a handler that misbehaves a little, 50 events -> 1 s in total
        handled.append(event)

    client.add_event_handler(slow)
    call = asyncio.create_task(client.api("status"))
    await conn.next_held()
    started = time.monotonic()
    conn.send(*(heartbeat(i) for i in range(50)), api_response("UP\n"))
    assert await call == "UP"
    assert time.monotonic() - started < 0.3
    assert len(handled) < 10  # the reply did not wait for the backlog
    await wait_until(lambda: len(handled) == 50)


async def test_a_full_event_queue_drops_loudly_and_counts(
    server: FakeEsl, make_client: Callable[..., EslClient]
):
    client = make_client(event_queue_size=5)
    await client.start(wait=2)
    conn = await server.subscribed()
    seen = Recorder()
    client.add_event_handler(seen)
    server.hold = {"api"}
    call = asyncio.create_task(client.api("status"))
    await conn.next_held()
    # One write: the reader takes all 20 frames from its buffer before the dispatcher can run.
    conn.send(*(heartbeat(i) for i in range(20)), api_response("UP\n"))
    assert await call == "UP"
    await wait_until(lambda: len(seen.events) == 5)
    await asyncio.sleep(0.05)
    assert client.dropped_events == 15
    assert [e.get("Event-Sequence") for e in seen.events] == ["0", "1", "2", "3", "4"]
    assert client.connected


# ---------------------------------------------------------------- connection loss


async def test_connection_drop_fails_every_pending_call_at_once_then_reconnects(
    server: FakeEsl, make_client: Callable[..., EslClient]
):
    server.api_bodies["show channels as json"] = '{"row_count":0}\n'
    client = make_client()
    events = Recorder()
    resyncs: list[str] = []

    async def resync() -> None:
        resyncs.append(await client.api("show channels as json"))

    client.add_connection_listener(on_up=resync)
    client.add_connection_listener(on_up=events.on_up, on_down=events.on_down)
    await client.start(wait=2)
    conn1 = await server.subscribed()
    await wait_until(lambda: events.ups == 1 and len(resyncs) == 1)

    server.hold = {"api", "bgapi"}
    job = asyncio.create_task(client.bgapi("originate a", timeout=5))
    job_a = await conn1.next_held()
    conn1.send(command_reply(f"+OK Job-UUID: {job_a.headers['Job-UUID']}", job_a.headers))
    pending = [asyncio.create_task(client.api(f"op {i}", timeout=5)) for i in range(3)]
    pending += [job, asyncio.create_task(client.bgapi("originate b", timeout=5))]
    for _ in range(4):
        await conn1.next_held()
    await asyncio.sleep(0.05)
    # "originate a" now waits for its BACKGROUND_JOB, the rest for their replies.
    assert not any(t.done() for t in pending)

    server.hold = set()
    conn1.abort()
    started = time.monotonic()
    results = await asyncio.gather(*pending, return_exceptions=True)
    assert time.monotonic() - started < 0.5
    assert all(isinstance(r, EslConnectionError) for r in results), results
    assert "BACKGROUND_JOB" in str(results[3])

    conn2 = await server.subscribed()
    assert conn2.subscription == conn1.subscription
    assert [c.line for c in conn2.commands[:2]] == ["auth ClueCon", conn1.subscription]
    await wait_until(lambda: events.ups == 2 and len(resyncs) == 2)
    assert len(events.downs) == 1 and isinstance(events.downs[0], EslConnectionError)
    assert resyncs == ['{"row_count":0}', '{"row_count":0}']
    server.api_bodies["status"] = "UP\n"
    assert await client.api("status") == "UP"


@pytest.mark.parametrize(
    "garbage",
    [
        b"Content-Length: twelve\nContent-Type: api/response\n\n",
        b"Content-Type: api/response\nthis line has no colon\n\n",
        encode_frame([("Content-Type", "text/event-json")], b'{"Event-Name": "CHANNEL_ANSWER", '),
    ],
    ids=["bad-content-length", "header-without-colon", "invalid-json-event"],
)
async def test_a_malformed_frame_resets_the_connection(
    server: FakeEsl, make_client: Callable[..., EslClient], garbage: bytes
):
    client = make_client()
    downs = Recorder()
    client.add_connection_listener(on_down=downs.on_down)
    await client.start(wait=2)
    conn1 = await server.subscribed()
    server.hold = {"api"}
    call = asyncio.create_task(client.api("status", timeout=5))
    await conn1.next_held()
    server.hold = set()
    conn1.send(garbage)
    with pytest.raises(EslConnectionError, match="malformed frame"):
        await call
    await server.subscribed()
    await wait_until(lambda: client.connected)
    server.api_bodies["status"] = "UP\n"
    assert await client.api("status") == "UP"
    assert len(downs.downs) == 1 and "malformed" in str(downs.downs[0])


async def test_heartbeat_watchdog_reconnects_a_silent_connection(
    server: FakeEsl, make_client: Callable[..., EslClient]
):
    client = make_client(heartbeat_timeout=0.2)
    downs = Recorder()
    client.add_connection_listener(on_down=downs.on_down)
    await client.start(wait=2)
    conn1 = await server.subscribed()
    # While HEARTBEATs flow the connection is left alone, even past several timeouts.
    for i in range(10):
        conn1.send(heartbeat(i))
        await asyncio.sleep(0.06)
    assert client.connected and len(server.connections) == 1 and downs.downs == []
    # Then the switch goes silent (a half-open TCP connection looks exactly like this).
    await server.subscribed(timeout=1.0)
    await wait_until(lambda: client.connected)
    assert len(downs.downs) == 1 and "HEARTBEAT" in str(downs.downs[0])


async def test_disconnect_notice_reconnects(server: FakeEsl, client: EslClient):
    conn1 = await server.subscribed()
    conn1.send(disconnect_notice())  # and, unlike FreeSWITCH, keep the socket open
    await server.subscribed()
    await wait_until(lambda: client.connected)
    await asyncio.wait_for(conn1.closed.wait(), 1)  # the client hung up the old one


async def test_commands_fail_fast_while_disconnected(server: FakeEsl, make_client: Callable[..., EslClient]):
    client = make_client()
    with pytest.raises(EslConnectionError, match="not connected"):
        await client.api("status")  # not started yet
    await client.start(wait=2)
    await server.stop()
    await wait_until(lambda: not client.connected)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.api("status", timeout=5),
        lambda: client.bgapi("status", timeout=5),
        lambda: client.command("filter Unique-ID x", timeout=5),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(EslConnectionError, match="not connected"):
            await call()
        assert time.monotonic() - started < 0.05


async def test_close_fails_pending_calls_and_later_ones(server: FakeEsl, client: EslClient):
    conn = await server.subscribed()
    server.hold = {"api"}
    call = asyncio.create_task(client.api("status", timeout=5))
    await conn.next_held()
    await client.close()
    with pytest.raises(EslConnectionError):
        await call
    assert not client.connected
    with pytest.raises(EslConnectionError, match="closed"):
        await client.api("status")
    await asyncio.wait_for(conn.closed.wait(), 1)
