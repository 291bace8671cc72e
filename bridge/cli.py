"""`bridge run | sandbox | demo-agent | keys create`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge import logging as bridge_logging
from bridge.config import Settings
from bridge.store.embedded import EmbeddedRedis, EmbeddedRedisError
from bridge.store.migrate import migrate_key_names
from bridge.store.redis import connect
from bridge.store.tenants import ALL_SCOPES, TenantStore


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _stop_requested() -> asyncio.Event:
    """Set by SIGINT or SIGTERM. Installed before anything starts, so a signal during start-up
    (a large append-only file can take a while to load) stops the bridge cleanly too."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]) -> int:
    """Run `start`, then wait for SIGINT or SIGTERM; `stop` runs on every way out (a failed or
    interrupted start has undone itself already, see BridgeRuntime.start; stop is then a no-op)."""
    stopping = _stop_requested()
    starting = asyncio.create_task(start())
    signalled = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # Cancelled once, not again and again (bridge.tasks does that): start-up's own
            # clean-up (BridgeRuntime.start) must run to its end.
            starting.cancel()
            await asyncio.wait({starting}, timeout=60.0)
            return 0
        try:
            starting.result()
        except EmbeddedRedisError as exc:  # DataDirInUse among them: say so, without a traceback
            print(f"bridge: {exc}", file=sys.stderr)
            return 1
        await stopping.wait()
        return 0
    finally:
        signalled.cancel()
        await stop()


async def _run(settings: Settings) -> int:
    from bridge.runtime import BridgeRuntime

    runtime = BridgeRuntime(settings)

    async def start() -> None:
        await runtime.start(esl_wait=None)
        assert runtime.endpoint is not None
        boxes = ", ".join(f"{t.box} at {t.host}:{t.port}" for t in settings.switches)
        where = f"{runtime.endpoint.base_url} (FreeSWITCH: {boxes})"
        print(f"bridge listening on {where}", flush=True)

    return await _serve(start, runtime.stop)


async def _sandbox(settings: Settings, args: argparse.Namespace) -> int:
    from bridge.sandbox import Sandbox

    box = Sandbox(settings, tenant_id=args.tenant, admin_key=args.admin_key, esl_port=args.esl_port)

    async def start() -> None:
        info = await box.start()
        print(
            "bridge sandbox is up\n"
            f"  base URL   : {info.base_url}\n"
            f"  tenant     : {info.tenant_id}\n"
            f"  admin key  : {info.admin_key}\n"
            f"  simulator  : {info.esl_url}\n"
            f"try: curl -H 'Authorization: Bearer {info.admin_key}' {info.base_url}/api/v1/voice-agents",
            flush=True,
        )

    return await _serve(start, box.stop)


async def _keys_create(settings: Settings, args: argparse.Namespace) -> int:
    unknown = sorted(set(args.scope) - set(ALL_SCOPES))
    if unknown:
        print(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}", file=sys.stderr)
        return 2
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    cluster = settings.redis_cluster and bool(url)
    if not url:
        data_dir = Path(settings.data_dir) / "redis"
        if EmbeddedRedis.holder(data_dir) is not None:
            url = EmbeddedRedis(data_dir).url  # a running bridge holds the directory: use its Redis
        else:
            embedded = EmbeddedRedis(data_dir)
            try:
                url = await embedded.astart()
            except EmbeddedRedisError as exc:  # a bridge took the directory meanwhile, say
                print(f"bridge: {exc}", file=sys.stderr)
                return 1
    client = connect(url, cluster=cluster)
    try:
        await migrate_key_names(client)  # before writing new names beside old ones
        clear, record = await TenantStore(client).create_key(args.tenant, args.scope, live=not args.test)
    finally:
        await client.aclose()
        if embedded is not None:
            await embedded.astop()
    print(clear)
    print(
        f"id={record.id} tenant={record.tenant_id} scopes={','.join(sorted(record.scopes))}", file=sys.stderr
    )
    print("store this key now: it is not shown again", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description="voice-AI call control for FreeSWITCH")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run against FreeSWITCH (BRIDGE_ESL_URL)")
    sb = sub.add_parser("sandbox", help="run with the built-in switch simulator")
    sb.add_argument("--host", default=None, help="HTTP host (default 127.0.0.1)")
    sb.add_argument("--port", type=int, default=None, help="HTTP port (default 8080)")
    sb.add_argument("--admin-key", default=None, help="use this yt_live_ key as the admin key")
    sb.add_argument("--tenant", default="sandbox", help="the sandbox tenant id")
    sb.add_argument("--esl-port", type=int, default=0, help="simulator ESL port (default: any free port)")
    from bridge.demo.agent import add_arguments as demo_agent_arguments

    demo_agent_arguments(sub.add_parser("demo-agent", help="a demo voice agent for the audio fork"))
    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    kc = keys_sub.add_parser("create", help="create a tenant API key (printed once)")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--scope", action="append", required=True, help="repeat for several scopes")
    kc.add_argument("--test", action="store_true", help="a yt_test_ key instead of yt_live_")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bridge_logging.configure()
    settings = Settings.from_env()
    if args.command == "run":
        try:
            settings.switches  # noqa: B018 - a bad box list is refused before anything starts
        except (ValueError, OSError) as exc:
            print(f"bridge: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(_run(settings))
    if args.command == "sandbox":
        changes: dict[str, object] = {}
        if args.host:
            changes["http_host"] = args.host
        if args.port is not None:
            changes["http_port"] = args.port
        return asyncio.run(_sandbox(settings.with_(**changes), args))
    if args.command == "demo-agent":
        from bridge.demo.agent import run as demo_agent

        return asyncio.run(demo_agent(args, _wait_for_signal))
    if args.command == "keys" and args.keys_command == "create":
        return asyncio.run(_keys_create(settings, args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
