"""One handler per verb, registered with the idempotency class the contract gives it.

A handler receives the validated model and a VerbContext; it returns the verb's `result`
dict, or raises ApiError. The control route (bridge.api.routes.control) runs auth, rate
limit, idempotency and the terminal-state check before any handler is called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from bridge.api.auth import Principal
    from bridge.calls.sessions import Session
    from bridge.calls.switch import Switch
    from bridge.services import Services

# strong: transfer, hangup, conference_* (a replay returns the cached response, 24 h)
# last_write: set_* (the key only suppresses retry storms, 24 h)
# action: play_audio, whisper, send_dtmf (the key dedupes within 60 s; no key = run again)
# read: log, get_call_state (the key is ignored)
IdempotencyClass = Literal["strong", "last_write", "action", "read"]


@dataclass(slots=True)
class VerbContext:
    svc: Services
    session: Session
    principal: Principal
    request_id: str
    # The request's Idempotency-Key when the verb's class honours it (None otherwise): a handler
    # that creates a record can key it on (call_id, key) as a second line of defence.
    idempotency_key: str | None = None

    @property
    def call_id(self) -> str:
        return self.session.call_id

    @property
    def switch(self) -> Switch:
        """The box holding the call; every leg the verb touches is there too (bridge.calls.pool)."""
        return self.svc.switches.of(self.session)


Handler = Callable[[VerbContext, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class VerbSpec:
    name: str
    handler: Handler
    idempotency: IdempotencyClass
    # Verbs that may run on a terminal session (none today; get_call_state reads a snapshot
    # and is still refused, as the SDK's AISessionTerminated tells the AI to stop).
    allow_terminal: bool = False


REGISTRY: dict[str, VerbSpec] = {}


def verb(
    name: str, *, idempotency: IdempotencyClass, allow_terminal: bool = False
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if name in REGISTRY:
            raise RuntimeError(f"verb {name} registered twice")
        REGISTRY[name] = VerbSpec(name, fn, idempotency, allow_terminal)
        return fn

    return register
