"""The ``extensions`` topic, sans-I/O bookkeeping (nerves_hub_link 2.6+).

Read in nerves_hub_link ``lib/nerves_hub_link/extensions/extensions.ex`` and
``socket.ex`` (388b391) and nerves_hub_web ``extensions_channel.ex``,
``lib/nerves_hub/extensions/dispatch.ex`` (0bb6b5cc5). Rules:

* The server pushes ``extensions:get {}`` on ``device`` (only to
  ``device_api_version >= 2.2.0``); the device joins ``extensions`` with
  ``{name: version}`` of what it offers. The join reply's response is a JSON
  **list** of names to attach; anything else attaches nothing.
* Attaching ``name``: push ``<name>:attached {}`` and remember that push's ref;
  a name we do not offer is answered ``<name>:error {"reason":
  "unknown_extension"}`` (local_shell is never offered, so it is refused this
  way, politely).
* The server may push ``attach`` / ``detach`` with ``{"extensions": "all" |
  [names] | name}``; detaching pushes ``<name>:detached {}``. A reply
  ``{"status": "error", "response": "detach"}`` to the ``attached`` push of an
  extension detaches it (the server does not accept it).
* ``<name>:<event>`` pushes go to the service only for attached extensions;
  pushes from the device for a detached extension are dropped
  (:meth:`Extensions.allows`).
* A new join (after ``phx_error`` or a reconnect) starts with nothing attached:
  the server's channel is new and attaches again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from nhlink_dbus.core.records import dataclass

logger = logging.getLogger(__name__)

TOPIC: Final = "extensions"
# What this client implements, and the versions nerves_hub_link 2.12 offers.
IMPLEMENTED: Final = {"health": "0.0.1", "geo": "0.0.1"}


@dataclass(frozen=True, slots=True)
class Push:
    """Push ``event`` on ``extensions``; when ``attaching``, record the ref for that name."""

    event: str
    payload: Mapping[str, Any]
    attaching: str | None = None


@dataclass(frozen=True, slots=True)
class Deliver:
    """A server event for an attached extension (e.g. ``health`` / ``check``)."""

    name: str
    event: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AttachedChanged:
    """The set of attached extensions changed."""

    attached: tuple[str, ...]


Action = Push | Deliver | AttachedChanged


def _targets(payload: Any, universe: list[str]) -> list[str]:
    """``{"extensions": "all" | [names] | name}`` → names (unknown shapes: none)."""
    value = payload.get("extensions") if isinstance(payload, dict) else None
    if value == "all":
        return list(universe)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    logger.warning("extensions: ignored a request naming %r", value)
    return []


class Extensions:
    """What is offered and what is attached; see the module docstring."""

    def __init__(self, offered: Mapping[str, str]) -> None:
        self.offered = dict(offered)
        self._attached: dict[str, str | None] = {}  # name -> ref of its attached push

    @property
    def attached(self) -> tuple[str, ...]:
        return tuple(sorted(self._attached))

    def allows(self, name: str) -> bool:
        return name in self._attached

    def join_params(self) -> dict[str, str]:
        """The ``extensions`` join payload."""
        return dict(self.offered)

    def joined(self, response: Any) -> list[Action]:
        """The join reply: attach what the server listed."""
        before = self.attached
        self._attached.clear()
        names = response if isinstance(response, list) else []
        if not isinstance(response, list):
            logger.warning("extensions: the join reply is not a list of names; nothing attached")
        out = self._attach([n for n in names if isinstance(n, str)])
        return self._changed(before, out)

    def attach_pushed(self, name: str, ref: str | None) -> list[Action]:
        """The ``<name>:attached`` push went out with ``ref`` (None: it could not be sent)."""
        before = self.attached
        if ref is not None:
            self._attached[name] = ref
        return self._changed(before, [])

    def message(self, event: str, payload: Any) -> list[Action]:
        """A push on ``extensions``."""
        before = self.attached
        if event == "attach":
            return self._changed(before, self._attach(_targets(payload, list(self.offered))))
        if event == "detach":
            targets = _targets(payload, list(self._attached))
            return self._changed(before, self._detach(targets))
        name, sep, rest = event.partition(":")
        if sep and rest and name in self._attached:
            return [Deliver(name, rest, payload if isinstance(payload, dict) else {})]
        logger.debug("= extensions: %s dropped (not attached)", event)
        return []

    def reply(self, ref: str, status: str, response: Any) -> list[Action]:
        """A reply to one of our pushes: ``error``/``"detach"`` detaches its extension."""
        if status != "error" or response != "detach":
            return []
        before = self.attached
        names = [n for n, r in self._attached.items() if r == ref]
        return self._changed(before, self._detach(names))

    def reset(self) -> list[Action]:
        """The channel or connection is gone: nothing is attached any more."""
        before = self.attached
        self._attached.clear()
        return self._changed(before, [])

    # -- internals ---------------------------------------------------------------------

    def _attach(self, names: list[str]) -> list[Action]:
        out: list[Action] = []
        for name in names:
            if name in self._attached:
                continue
            if name in self.offered:
                out.append(Push(f"{name}:attached", {}, attaching=name))
            else:
                out.append(Push(f"{name}:error", {"reason": "unknown_extension"}))
        return out

    def _detach(self, names: list[str]) -> list[Action]:
        out: list[Action] = []
        for name in names:
            if self._attached.pop(name, False) is not False:
                out.append(Push(f"{name}:detached", {}))
        return out

    def _changed(self, before: tuple[str, ...], out: list[Action]) -> list[Action]:
        if self.attached != before:
            out.append(AttachedChanged(self.attached))
        return out
