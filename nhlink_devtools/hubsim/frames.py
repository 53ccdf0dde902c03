"""Phoenix V2 JSON frames as the server sees them (protocol.md §1.3).

``[join_ref, ref, topic, event, payload]``: the simulator decodes what the
device sends into :class:`SimFrame` and encodes its replies and pushes the same
way. Server pushes carry ``ref = null``; replies echo the request's ``ref``
and carry the channel's ``join_ref`` (``null`` on topic ``"phoenix"`` and on
``unmatched topic`` errors, as Phoenix's ``Reply`` struct defaults it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from nhlink_dbus.core.phoenix import decode_frame


@dataclass(frozen=True, slots=True)
class SimFrame:
    """One Phoenix message; ``time`` is when the simulator sent or received it."""

    join_ref: str | None
    ref: str | None
    topic: str
    event: str
    payload: Any
    time: float = field(default_factory=time.time, compare=False)

    def encode(self) -> str:
        return json.dumps([self.join_ref, self.ref, self.topic, self.event, self.payload])

    def to_json(self) -> list[Any]:
        return [self.join_ref, self.ref, self.topic, self.event, self.payload]

    @classmethod
    def decode(cls, text: str) -> SimFrame:
        """Parse a text frame by the client core's rules (a V2 five-element array with
        an object payload); raise ProtocolError otherwise."""
        frame = decode_frame(text)
        return cls(frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload)


def reply(request: SimFrame, join_ref: str | None, status: str, response: Any) -> SimFrame:
    """A ``phx_reply`` to ``request``."""
    payload = {"status": status, "response": response}
    return SimFrame(join_ref, request.ref, request.topic, "phx_reply", payload)
