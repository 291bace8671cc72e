"""The caller's DTMF, told to the AI over its audio fork.

mod_audio_fork carries audio only, so a key the caller presses reaches the bridge as an ESL
`DTMF` event and nowhere else. The bridge passes each digit on as a text frame on the AI's
fork (`uuid_audio_fork <uuid> send_text ai_fork …`, the way `token_refresh` travels):

    {"type": "dtmf", "digit": "1", "source": "RTP"}

`source` is FreeSWITCH's DTMF-Source (RTP, INBAND_AUDIO, ENDPOINT, APP, UNKNOWN). Digits are
sent while the AI's fork is connected and the session is live; in a conference the frame goes
to the AI's conference leg, where its fork then runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from bridge.calls.manager import FORK_BUGNAME
from bridge.errors import SwitchError, SwitchUnavailable
from bridge.esl.protocol import Event

if TYPE_CHECKING:
    from bridge.services import Services

log = structlog.get_logger(__name__)

DIGITS = frozenset("0123456789*#ABCD")


class DtmfRelay:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    async def start(self) -> None:
        self.svc.calls.on("DTMF", self._on_dtmf)

    async def _on_dtmf(self, event: Event) -> None:
        digit = event.get("DTMF-Digit").upper()
        if digit not in DIGITS or len(digit) != 1:
            return
        session = await self.svc.sessions.get(event.unique_id)
        if session is None or session.terminal or not session.fork_connected:
            return
        frame = {"type": "dtmf", "digit": digit, "source": event.get("DTMF-Source", "UNKNOWN")}
        fork_uuid = session.extra.get("ai_fork_uuid") or session.call_id
        try:
            await self.svc.switches.of(session).fork_send_text(fork_uuid, frame, bugname=FORK_BUGNAME)
        except (SwitchError, SwitchUnavailable) as exc:
            log.info("dtmf_not_relayed", call_id=session.call_id, digit=digit, error=str(exc))
