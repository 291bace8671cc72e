"""Runtime settings, read once from the environment (see the README's configuration table)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import urlsplit


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_floats(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = os.environ.get(name)
    if not raw:
        return default
    return tuple(float(x) for x in raw.split(",") if x.strip())


@dataclass(frozen=True)
class EslTarget:
    host: str
    port: int
    password: str
    # The box's name (the URL's #fragment, else HOST:PORT): sessions, leases and metrics carry it.
    box: str = ""


# A box name ends up in Redis keys, session hashes and metric labels: keep it plain.
_BOX_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def parse_esl_url(url: str) -> EslTarget:
    """`esl://:PASSWORD@HOST:PORT[#NAME]` -> EslTarget. The user part is ignored (inbound ESL has
    none); NAME (default HOST:PORT) names the box."""
    parts = urlsplit(url.strip())
    if parts.scheme != "esl":
        raise ValueError(f"an ESL URL must start with esl://, got {url!r}")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 8021
    box = parts.fragment or f"{host}:{port}"
    if not _BOX_NAME.fullmatch(box):
        raise ValueError(f"switch name {box!r}: use 1-64 of A-Z a-z 0-9 . _ : -")
    return EslTarget(host=host, port=port, password=parts.password or "ClueCon", box=box)


def parse_switches(esl_url: str, switches_file: str = "") -> tuple[EslTarget, ...]:
    """Every FreeSWITCH box this bridge drives: BRIDGE_SWITCHES (a file, one `esl://` URL per line,
    `#` comments) when set, else BRIDGE_ESL_URL, which may list several URLs separated by commas
    or spaces. Names must be unique."""
    if switches_file:
        lines = Path(switches_file).read_text().splitlines()
        urls = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    else:
        urls = [u for u in re.split(r"[,\s]+", esl_url) if u]
    if not urls:
        raise ValueError("no FreeSWITCH box configured (BRIDGE_ESL_URL or BRIDGE_SWITCHES)")
    targets = tuple(parse_esl_url(u) for u in urls)
    names = [t.box for t in targets]
    if len(set(names)) != len(names):
        raise ValueError(f"switch names must be unique, got {names}")
    return targets


@dataclass(frozen=True)
class Settings:
    # Where things live
    esl_url: str = "esl://:ClueCon@127.0.0.1:8021"
    # A file listing the boxes (one esl:// URL per line); overrides esl_url (docs/scaling.md).
    switches_file: str = ""
    # How long a bridge's claim on a box's events lasts unless renewed (docs/scaling.md).
    box_lease_s: float = 3.0
    redis_url: str | None = None
    # REDIS_URL names a Redis Cluster (redis-py's cluster client): also said by a redis+cluster:// URL
    redis_cluster: bool = False
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # The base URL clients reach this bridge at (recording URLs carry it); empty: the bound one.
    public_base_url: str = ""
    data_dir: Path = Path("var")

    # FreeSWITCH side
    recordings_dir: str = "/usr/local/freeswitch/recordings"
    gateway: str = "pstn"
    sip_profile: str = "lab"
    callcenter_domain: str = "default"
    conference_profile: str = "default"
    # Where the -b side of the AI's conference leg (loopback/<exten>/<context>) parks.
    conference_ai_exten: str = "bridge_ai_leg"
    conference_ai_context: str = "lab"
    # The directory domain for conference_add(participant_type="agent") without `@domain`.
    directory_domain: str = "127.0.0.1"
    default_queue: str = "support"
    fork_subprotocols: tuple[str, ...] = ("audio.drachtio.org", "audio.jambonz.org")
    esl_command_timeout_s: float = 10.0
    originate_timeout_s: int = 30
    transfer_ring_timeout_s: int = 30
    session_timeout_s: int = 1800

    # Callback tokens and sessions
    token_ttl_s: int = 1800
    token_refresh_at_s: int = 1500
    ws_session_token_ttl_s: int = 86400

    # Control endpoint
    rate_limit_per_s: int = 10
    idempotency_ttl_s: int = 86400
    idempotency_short_ttl_s: int = 60

    # Webhooks
    webhook_timeout_s: float = 10.0
    webhook_retry_schedule_s: tuple[float, ...] = (5, 30, 180, 900, 3600, 21600)
    webhook_allow_loopback_http: bool = False
    webhook_secret_grace_s: int = 86400
    # A bridge that dies leaves events it read but did not fan out, and deliveries it was sending:
    # another bridge takes the first over after this long, the second once their lease (the
    # HTTP timeout plus this margin) has run out (docs/scaling.md).
    webhook_claim_idle_s: float = 30.0
    webhook_lease_margin_s: float = 30.0

    # Scheduler
    scheduler_interval_s: float = 1.0

    # Recordings (docs/recordings.md): signed URLs; no secret set = one kept in Redis for all instances
    recording_url_secret: str = ""
    recording_url_ttl_s: int = 900

    # Metrics (docs/metrics.md): a bearer token for GET /metrics (empty: no auth, like /healthz), and
    # how often the values a scrape cannot read itself (the webhook queue depth) are refreshed.
    metrics_token: str = ""
    metrics_refresh_s: float = 5.0

    # Text-to-speech (v1.1 extension, docs/control-api.md "TTS"): off answers tts_text with 422
    # tts_not_supported as v1 does; flite (mod_flite) or espeak (espeak-ng via mod_tts_commandline)
    # speak it. An empty voice is the engine's default (bridge.tts.ENGINES).
    tts: str = "off"
    tts_voice: str = ""

    instance_id: str = field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")

    @classmethod
    def from_env(cls) -> Settings:
        d = cls()
        return cls(
            esl_url=_env("BRIDGE_ESL_URL", d.esl_url),
            switches_file=_env("BRIDGE_SWITCHES", d.switches_file),
            box_lease_s=_env_float("BRIDGE_BOX_LEASE_S", d.box_lease_s),
            redis_url=os.environ.get("REDIS_URL") or None,
            redis_cluster=_env_bool("BRIDGE_REDIS_CLUSTER", d.redis_cluster),
            http_host=_env("BRIDGE_HOST", d.http_host),
            http_port=_env_int("BRIDGE_PORT", d.http_port),
            public_base_url=_env("BRIDGE_PUBLIC_BASE_URL", d.public_base_url),
            data_dir=Path(_env("BRIDGE_DATA_DIR", str(d.data_dir))),
            recordings_dir=_env("BRIDGE_RECORDINGS_DIR", d.recordings_dir),
            gateway=_env("BRIDGE_GATEWAY", d.gateway),
            sip_profile=_env("BRIDGE_SIP_PROFILE", d.sip_profile),
            callcenter_domain=_env("BRIDGE_CALLCENTER_DOMAIN", d.callcenter_domain),
            conference_profile=_env("BRIDGE_CONFERENCE_PROFILE", d.conference_profile),
            conference_ai_exten=_env("BRIDGE_CONFERENCE_AI_EXTEN", d.conference_ai_exten),
            conference_ai_context=_env("BRIDGE_CONFERENCE_AI_CONTEXT", d.conference_ai_context),
            directory_domain=_env("BRIDGE_DIRECTORY_DOMAIN", d.directory_domain),
            default_queue=_env("BRIDGE_DEFAULT_QUEUE", d.default_queue),
            fork_subprotocols=tuple(
                s.strip()
                for s in _env("BRIDGE_FORK_SUBPROTOCOLS", ",".join(d.fork_subprotocols)).split(",")
                if s.strip()
            ),
            esl_command_timeout_s=_env_float("BRIDGE_ESL_TIMEOUT_S", d.esl_command_timeout_s),
            originate_timeout_s=_env_int("BRIDGE_ORIGINATE_TIMEOUT_S", d.originate_timeout_s),
            transfer_ring_timeout_s=_env_int("BRIDGE_TRANSFER_RING_TIMEOUT_S", d.transfer_ring_timeout_s),
            session_timeout_s=_env_int("BRIDGE_SESSION_TIMEOUT_S", d.session_timeout_s),
            token_ttl_s=_env_int("BRIDGE_TOKEN_TTL_S", d.token_ttl_s),
            token_refresh_at_s=_env_int("BRIDGE_TOKEN_REFRESH_AT_S", d.token_refresh_at_s),
            ws_session_token_ttl_s=_env_int("BRIDGE_WS_SESSION_TOKEN_TTL_S", d.ws_session_token_ttl_s),
            rate_limit_per_s=_env_int("BRIDGE_RATE_LIMIT_PER_S", d.rate_limit_per_s),
            idempotency_ttl_s=_env_int("BRIDGE_IDEMPOTENCY_TTL_S", d.idempotency_ttl_s),
            idempotency_short_ttl_s=_env_int("BRIDGE_IDEMPOTENCY_SHORT_TTL_S", d.idempotency_short_ttl_s),
            webhook_timeout_s=_env_float("BRIDGE_WEBHOOK_TIMEOUT_S", d.webhook_timeout_s),
            webhook_retry_schedule_s=_env_floats(
                "BRIDGE_WEBHOOK_RETRY_SCHEDULE_S", d.webhook_retry_schedule_s
            ),
            webhook_allow_loopback_http=_env_bool(
                "BRIDGE_WEBHOOK_ALLOW_LOOPBACK_HTTP", d.webhook_allow_loopback_http
            ),
            webhook_secret_grace_s=_env_int("BRIDGE_WEBHOOK_SECRET_GRACE_S", d.webhook_secret_grace_s),
            webhook_claim_idle_s=_env_float("BRIDGE_WEBHOOK_CLAIM_IDLE_S", d.webhook_claim_idle_s),
            webhook_lease_margin_s=_env_float("BRIDGE_WEBHOOK_LEASE_MARGIN_S", d.webhook_lease_margin_s),
            scheduler_interval_s=_env_float("BRIDGE_SCHEDULER_INTERVAL_S", d.scheduler_interval_s),
            recording_url_secret=_env("BRIDGE_RECORDING_URL_SECRET", d.recording_url_secret),
            recording_url_ttl_s=_env_int("BRIDGE_RECORDING_URL_TTL_S", d.recording_url_ttl_s),
            metrics_token=_env("BRIDGE_METRICS_TOKEN", d.metrics_token),
            metrics_refresh_s=_env_float("BRIDGE_METRICS_REFRESH_S", d.metrics_refresh_s),
            tts=_env("BRIDGE_TTS", d.tts).strip().lower(),
            tts_voice=_env("BRIDGE_TTS_VOICE", d.tts_voice).strip(),
        )

    def __post_init__(self) -> None:
        from bridge.tts import check_settings  # bridge.tts needs bridge.calls, which needs no settings

        check_settings(self.tts, self.tts_voice)

    @property
    def esl(self) -> EslTarget:
        """The first box (the only one in a one-box deployment)."""
        return self.switches[0]

    @property
    def switches(self) -> tuple[EslTarget, ...]:
        return parse_switches(self.esl_url, self.switches_file)

    def with_(self, **changes: object) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return replace(self, **changes)  # type: ignore[arg-type]
