"""The embedded redis-server as a supervised child (bridge.store.embedded, docs/operations.md):
started means loaded, one bridge per data directory, never two redis-servers on one append-only
file (kill -9 included), restarted when it dies while the API answers 503 and /healthz says so.

Real processes throughout: redis-server children, and `python -m bridge sandbox` for the restarts.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import redis as redis_sync
import structlog
from aiohttp import web

from bridge.config import Settings
from bridge.store.embedded import DataDirInUse, EmbeddedRedis
from bridge.store.redis import connect
from bridge.webhooks.outbox import Outbox
from tests.helpers import http
from tests.webhook_receiver import Received, Receiver

pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="counts processes through /proc")

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- helpers


def redis_servers_on(redis_dir: Path) -> list[int]:
    """The live redis-server processes serving `redis_dir` (their title names its socket)."""
    sock = str((redis_dir / "redis.sock").resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        words = cmdline.split()
        if words and os.path.basename(words[0]) == "redis-server" and sock in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def write_aof(redis_dir: Path, keys: int, value_bytes: int = 40) -> None:
    """A plain (command by command) append-only file of `keys` SETs."""
    redis_dir.mkdir(parents=True, exist_ok=True)
    value = b"v" * value_bytes
    with open(redis_dir / "appendonly.aof", "wb") as f:
        for i in range(keys):
            key = b"seed:%d" % i
            f.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))


class BridgeProcess:
    """`python -m bridge sandbox` on a data directory, with its own embedded Redis."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.env.update({"BRIDGE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **env})
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.admin_key = ""
        self.log_path = data_dir.parent / "bridge.log"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.write_bytes(b"")
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "bridge", "sandbox", "--port", "0", "--tenant", "acme"],
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def start(self, timeout: float = 60.0) -> BridgeProcess:
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text(errors="replace")
            url = re.search(r"base URL\s+: (\S+)", text)
            key = re.search(r"admin key\s+: (\S+)", text)
            if url and key:
                self.base_url, self.admin_key = url.group(1), key.group(1)
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"bridge exited {self.proc.returncode} at start:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"bridge not up in {timeout}s:\n{text[-3000:]}")
            await asyncio.sleep(0.05)

    @property
    def info(self) -> SimpleNamespace:  # what tests.helpers.http expects of a sandbox
        return SimpleNamespace(base_url=self.base_url, admin_key=self.admin_key)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    async def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ensure_gone(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def healthz(base_url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/healthz") as resp:
        return resp.status, await resp.json()


# ---------------------------------------------------------------- started means loaded


@pytest.mark.parametrize("how", ["astart", "start"])
async def test_start_returns_once_a_slow_loading_append_only_file_is_loaded(tmp_path: Path, how: str) -> None:
    # About 9 MB: Redis reads it for a good fraction of a second and, every 2 MB, answers
    # what it was sent meanwhile with LOADING.
    write_aof(tmp_path, 120_000)
    server = EmbeddedRedis(tmp_path)
    with structlog.testing.capture_logs() as logs:
        url = await server.astart() if how == "astart" else await asyncio.to_thread(server.start)
    try:
        assert any(e["event"] == "embedded_redis_loading" for e in logs) or how == "start"
        client = connect(url)
        try:
            assert await client.ping() is True  # not LOADING
            assert await client.dbsize() == 120_000
        finally:
            await client.aclose()
        assert server.state == "running"
    finally:
        server.stop()
    assert redis_servers_on(tmp_path) == []


# ---------------------------------------------------------------- one bridge per data directory


async def test_a_second_owner_of_the_data_dir_is_refused_and_names_the_first(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    first.start()
    try:
        [pid] = redis_servers_on(tmp_path)
        assert pid == first.pid
        assert EmbeddedRedis.holder(tmp_path) == os.getpid()
        with pytest.raises(DataDirInUse, match=rf"in use by another bridge \(pid {os.getpid()}\)"):
            await EmbeddedRedis(tmp_path).astart()
        assert redis_servers_on(tmp_path) == [pid]  # the first one untouched, no second
        assert redis_sync.Redis(unix_socket_path=str(first.socket_path)).ping()
    finally:
        first.stop()
    assert EmbeddedRedis.holder(tmp_path) is None
    second = EmbeddedRedis(tmp_path)
    second.start()  # free again once the first is stopped
    second.stop()
    assert redis_servers_on(tmp_path) == []


_ORPHAN_MAKER = """
import sys, time
from pathlib import Path
import redis
from bridge.store.embedded import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]), die_with_parent=sys.argv[2] == "yes")
server.start()
client = redis.Redis(unix_socket_path=str(server.socket_path))
client.config_set("appendfsync", "always")
client.set("written-before-the-kill", "yes")
print(f"PID={server.pid}", flush=True)
time.sleep(3600)
"""


def _start_and_kill9_a_parent(redis_dir: Path, *, die_with_parent: bool) -> int:
    """A process that starts an EmbeddedRedis on `redis_dir`, then is killed with SIGKILL."""
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_MAKER, str(redis_dir), "yes" if die_with_parent else "no"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
    )
    assert parent.stdout is not None
    for line in parent.stdout:  # its log lines, then ours
        if line.startswith(b"PID="):
            break
    parent.kill()
    parent.wait()
    return int(line[4:])


async def test_a_kill_9_of_the_parent_takes_its_redis_server_down(tmp_path: Path) -> None:
    child = _start_and_kill9_a_parent(tmp_path, die_with_parent=True)
    assert child > 0
    await eventually(lambda: redis_servers_on(tmp_path) == [], timeout=10, what="the child to go (PDEATHSIG)")


async def test_a_leftover_redis_server_is_stopped_before_a_new_one_starts(tmp_path: Path) -> None:
    # Without PDEATHSIG (not Linux, or a child started off the main thread) the child outlives a
    # kill -9 of its bridge. The next start finds it through redis.pid and stops it first.
    orphan = _start_and_kill9_a_parent(tmp_path, die_with_parent=False)
    assert redis_servers_on(tmp_path) == [orphan]
    assert int((tmp_path / "redis.pid").read_text()) == orphan
    server = EmbeddedRedis(tmp_path)
    with structlog.testing.capture_logs() as logs:
        server.start()
    try:
        assert [e["pid"] for e in logs if e["event"] == "embedded_redis_leftover"] == [orphan]
        assert redis_servers_on(tmp_path) == [server.pid] != [orphan]
        client = redis_sync.Redis(unix_socket_path=str(server.socket_path), decode_responses=True)
        assert client.get("written-before-the-kill") == "yes"  # the leftover flushed on SIGTERM
    finally:
        server.stop()
    assert redis_servers_on(tmp_path) == []


# ---------------------------------------------------------------- restarted when it dies


async def test_a_redis_server_that_dies_is_restarted_with_its_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(EmbeddedRedis, "RESTART_DELAYS_S", (0.3,))  # long enough to see "restarting"
    server = EmbeddedRedis(tmp_path)
    url = await server.astart()
    supervisor = asyncio.create_task(server.supervise())
    client = connect(url)
    try:
        await client.config_set("appendfsync", "always")
        await client.set("k", "v")
        first = server.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: server.state == "restarting", what="restarting")
        await eventually(lambda: server.state == "running", what="running again")
        assert server.restarts == 1 and server.pid != first
        assert server.status() == {"state": "running", "restarts": 1, "last_exit": "killed by SIGKILL"}
        assert redis_servers_on(tmp_path) == [server.pid]
        assert await client.get("k") == "v"  # the same client reconnects to the new server
    finally:
        await client.aclose()
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)
        server.stop()
    assert redis_servers_on(tmp_path) == []


async def test_killing_the_embedded_redis_gives_503s_then_recovery_without_a_bridge_restart(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.sandbox import Sandbox

    # A pause before the restart so the outage is long enough to be seen from outside.
    monkeypatch.setattr(EmbeddedRedis, "RESTART_DELAYS_S", (1.0,))
    replies: list[tuple[float, int, str | None]] = []
    health: list[tuple[int, dict[str, Any]]] = []
    flowing = True
    box = Sandbox(settings.with_(redis_url=None, data_dir=tmp_path), tenant_id="acme")

    async def traffic() -> None:
        while flowing:
            reply = await http(box, "GET", "/api/v1/voice-agents")
            replies.append((time.monotonic(), reply.status, reply.code))
            await asyncio.sleep(0.02)

    # Logs captured, not rendered: the test console renders each of the outage's tracebacks for a
    # second or more, on the event loop, which would stall the very restart this test watches.
    with structlog.testing.capture_logs() as captured:
        await box.start()
        embedded = box.runtime.embedded_redis if box.runtime else None
        assert embedded is not None
        requests = asyncio.create_task(traffic())
        try:
            await eventually(lambda: len(replies) >= 5, what="traffic")
            assert {status for _, status, _ in replies} == {200}
            os.kill(embedded.pid or 0, signal.SIGKILL)
            killed_at = time.monotonic()
            while True:
                status, body = await healthz(box.info.base_url)
                health.append((status, body))
                if status == 200 and body["embedded_redis"]["restarts"] == 1:
                    break
                assert time.monotonic() - killed_at < 20, health[-1]
                await asyncio.sleep(0.05)
            recovered_at = time.monotonic()
            await eventually(
                lambda: any(at > recovered_at + 0.5 for at, _, _ in replies), what="traffic after"
            )
        finally:
            flowing = False
            await requests
            await box.stop()
    assert [e["exit"] for e in captured if e["event"] == "embedded_redis_died"] == ["killed by SIGKILL"]
    during = [(status, code) for at, status, code in replies if killed_at < at < recovered_at]
    after = [status for at, status, _ in replies if at > recovered_at + 0.2]
    assert (503, "store_unavailable") in during
    assert {status for status, _ in during} <= {200, 503}, during  # never a 500
    assert set(after) == {200}
    # /healthz: down and saying why while it is restarted, then up again (the box list aside:
    # its one entry names the simulator's port).
    assert all(body.pop("switches") for _, body in health)
    assert (
        503,
        {
            "ok": False,
            "redis": False,
            "freeswitch": True,
            "embedded_redis": {"state": "restarting", "restarts": 0, "last_exit": "killed by SIGKILL"},
        },
    ) in health
    assert health[-1][1]["embedded_redis"] == {
        "state": "running",
        "restarts": 1,
        "last_exit": "killed by SIGKILL",
    }
    assert health[-1][1]["redis"] is True
    assert redis_servers_on(tmp_path / "redis") == []


async def test_a_bridge_that_fails_to_start_stops_its_redis_server(
    settings: Settings, tmp_path: Path
) -> None:
    from bridge.esl.errors import EslConnectionError
    from bridge.runtime import BridgeRuntime

    # Nothing listens on port 9 of localhost: the ESL connection fails after Redis came up.
    runtime = BridgeRuntime(settings.with_(redis_url=None, data_dir=tmp_path, esl_url="esl://:x@127.0.0.1:9"))
    with pytest.raises(EslConnectionError):
        await runtime.start(esl_wait=0.5)
    assert redis_servers_on(tmp_path / "redis") == []
    assert EmbeddedRedis.holder(tmp_path / "redis") is None


# ---------------------------------------------------------------- the bridge process


@pytest.mark.timeout(240)
async def test_the_bridge_restarts_on_a_data_dir_with_a_large_append_only_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_aof(data / "redis", 120_000)  # about 9 MB: Redis answers LOADING for a while
    assert (data / "redis" / "appendonly.aof").stat().st_size > 8_000_000
    for _ in range(3):
        bridge = BridgeProcess(data)
        try:
            await bridge.start()
            status, body = await healthz(bridge.base_url)
            assert status == 200 and body["embedded_redis"]["state"] == "running", body
            assert len(redis_servers_on(bridge.redis_dir)) == 1
            # A second bridge on the same directory refuses, names the first, and touches nothing.
            second = BridgeProcess(data)
            second.log_path = tmp_path / "second.log"
            second.proc = second._spawn()
            assert await asyncio.to_thread(second.proc.wait, 60) == 1
            assert f"in use by another bridge (pid {bridge.proc.pid})" in second.log()  # type: ignore[union-attr]
            assert len(redis_servers_on(bridge.redis_dir)) == 1
            assert (await healthz(bridge.base_url))[0] == 200
            # `bridge keys create` while it runs uses the running bridge's Redis (no second one).
            made = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "keys",
                    "create",
                    "--tenant",
                    "acme",
                    "--scope",
                    "voice_agents:read",
                ],
                cwd=REPO,
                env=bridge.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert made.returncode == 0, made.stderr
            reply = await http(bridge, "GET", "/api/v1/voice-agents", auth=made.stdout.split()[0])
            assert reply.status == 200, reply.body
            assert await bridge.terminate() == 0, bridge.log()[-3000:]
        finally:
            bridge.ensure_gone()
        assert redis_servers_on(bridge.redis_dir) == [], "the bridge left its redis-server running"


async def test_a_sigterm_while_redis_is_still_loading_leaves_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_aof(data / "redis", 120_000)
    bridge = BridgeProcess(data)
    bridge.proc = bridge._spawn()
    try:
        await eventually(lambda: "embedded_redis_loading" in bridge.log(), timeout=60, what="loading")
        bridge.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(bridge.proc.wait, 30) == 0, bridge.log()[-3000:]
    finally:
        bridge.ensure_gone()
    assert redis_servers_on(bridge.redis_dir) == []
    assert EmbeddedRedis.holder(bridge.redis_dir) is None


@pytest.mark.timeout(400)
async def test_kill_9_ten_times_then_a_restart_delivers_every_pending_webhook_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    data = tmp_path / "data"
    env = {
        # Fail every attempt until the last restart; plenty of retries, one a second.
        "BRIDGE_WEBHOOK_RETRY_SCHEDULE_S": ",".join(["1"] * 200),
        "BRIDGE_WEBHOOK_TIMEOUT_S": "2",
    }
    delivered: list[str] = []
    accepting = False

    async def answer(_n: int, r: Received) -> web.StreamResponse:
        if accepting:
            delivered.append(r.json["event_id"])
            return web.Response(status=200, text="ok")
        return web.Response(status=500, text="not yet")

    receiver.behaviour = answer
    emitted: list[str] = []
    bridge = BridgeProcess(data, **env)
    try:
        for round_ in range(11):
            accepting = round_ == 10
            await bridge.start()
            assert len(redis_servers_on(bridge.redis_dir)) == 1, (
                f"round {round_}: {redis_servers_on(bridge.redis_dir)}"
            )
            status, body = await healthz(bridge.base_url)
            assert status == 200 and body["embedded_redis"]["state"] == "running", body
            if round_ == 0:
                reply = await http(
                    bridge, "POST", "/api/v1/webhooks", {"url": receiver.url, "event_types": ["*"]}
                )
                assert reply.status == 201, reply.body
                receiver.secrets["current"] = reply.body["signing_secret"]
            if round_ == 10:
                break
            client = connect(f"unix://{bridge.redis_dir / 'redis.sock'}")
            try:
                for i in range(2):
                    event = await Outbox(client).emit("call.started", "acme", {"call_id": f"c-{round_}-{i}"})
                    emitted.append(event.event_id)
            finally:
                await client.aclose()
            # Killed once every event so far has been attempted (and refused) at least once.
            await eventually(lambda: set(emitted) <= set(receiver.event_ids()), timeout=30, what="attempts")
            bridge.kill9()
        await eventually(lambda: set(delivered) >= set(emitted), timeout=90, what="every delivery")
        await asyncio.sleep(1.5)  # a second delivery would come now
        assert sorted(delivered) == sorted(emitted)  # each once
        assert all(r.verified_with == {"current": True} for r in receiver.requests)
        assert len(redis_servers_on(bridge.redis_dir)) == 1
        assert await bridge.terminate() == 0
    finally:
        bridge.ensure_gone()
    assert redis_servers_on(bridge.redis_dir) == []
    assert len(emitted) == 20
