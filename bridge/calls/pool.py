"""The FreeSWITCH boxes one bridge drives: one ESL connection and one `Switch` per box.

A session records the box that holds its channel (`Session.switch_id`), and every command for the
call goes there (`SwitchPool.of`). A new call (POST /calls, a scheduled callback) goes to the
healthy box with the fewest live channels (`SwitchPool.pick`); a conference and every leg the AI
brings into it stay on the box of the call that started it. The channel counts come from the
event stream each connection carries (CHANNEL_CREATE / CHANNEL_DESTROY), seeded by `show channels`
at every resync, so every bridge sees the same counts without asking Redis.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bridge.errors import ApiError, SwitchUnavailable

if TYPE_CHECKING:
    from bridge.calls.sessions import Session
    from bridge.calls.switch import Switch
    from bridge.esl.client import EslClient
    from bridge.esl.protocol import Event


@dataclass(eq=False)
class SwitchBox:
    id: str
    esl: EslClient
    switch: Switch
    channels: set[str] = field(default_factory=set)

    @property
    def connected(self) -> bool:
        return self.esl.connected

    def track(self, event: Event) -> None:
        name = event.name
        if name == "CHANNEL_CREATE":
            self.channels.add(event.unique_id)
        elif name == "CHANNEL_DESTROY":
            self.channels.discard(event.unique_id)


class SwitchPool:
    def __init__(self, boxes: list[SwitchBox]) -> None:
        if not boxes:
            raise ValueError("a bridge needs at least one FreeSWITCH box")
        self._boxes = {box.id: box for box in boxes}
        self.default = boxes[0]
        self._turn = itertools.count()

    def __iter__(self) -> Iterator[SwitchBox]:
        return iter(self._boxes.values())

    def __len__(self) -> int:
        return len(self._boxes)

    def get(self, box_id: str) -> SwitchBox | None:
        return self._boxes.get(box_id)

    def box_of(self, session: Session) -> SwitchBox:
        """The box holding the session's channel. A session from before boxes were recorded
        has none: it belongs to the first box (the only one such a bridge had)."""
        if not session.switch_id:
            return self.default
        box = self._boxes.get(session.switch_id)
        if box is None:
            raise SwitchUnavailable(
                f"call {session.call_id} is on switch {session.switch_id!r}, which this bridge does not drive"
            )
        return box

    def of(self, session: Session) -> Switch:
        return self.box_of(session).switch

    def same_box(self, a: Session, b: Session) -> None:
        """Monitor, whisper and barge join two channels' media: both must be on one box."""
        if self.box_of(a) is not self.box_of(b):
            raise ApiError(
                409,
                "cross_switch_not_supported",
                f"call {b.call_id} is on another FreeSWITCH box than this call; monitor, whisper "
                "and barge work within one box (docs/scaling.md)",
            )

    @property
    def any_connected(self) -> bool:
        return any(box.connected for box in self._boxes.values())

    def pick(self) -> SwitchBox:
        """Where a new call goes: the connected box with the fewest live channels; ties take
        turns, so an idle pool spreads calls instead of filling the first box."""
        healthy = [box for box in self._boxes.values() if box.connected]
        if not healthy:
            raise SwitchUnavailable("no ESL connection to any FreeSWITCH box")
        turn = next(self._turn)
        order = {box.id: (i - turn) % len(healthy) for i, box in enumerate(healthy)}
        return min(healthy, key=lambda box: (len(box.channels), order[box.id]))
