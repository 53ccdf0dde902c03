"""What both prompts do between their D-Bus binding and the :class:`~nhlink_kiosk.prompt.Prompt`.

A prompt's bus code (dbus-next in ``gtk.py``, QtDBus in ``qt.py``) hands the
:class:`Driver` what arrives — the owner of the service's name, its signals, the
replies of its calls, the keys — and implements a :class:`Port`: the two calls a
prompt makes (``Decide``, ``GetPendingRequests``), drawing a view, and a timer.
The driver feeds the prompt, performs its effects through the port, logs its
reports and redraws after every change.

The owner is looked up once at start-up (``GetNameOwner``) after subscribing to
``NameOwnerChanged``; a reply that a ``NameOwnerChanged`` overtook is stale and
dropped (:meth:`Driver.owner_lookup` / :meth:`Driver.owner_found`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from nhlink_kiosk.cli import report
from nhlink_kiosk.prompt import Action, CallDecide, Effect, LoadPending, Prompt, Report, View

logger = logging.getLogger("nhlink_kiosk")

TICK_S = 0.5  # how often a countdown is redrawn

Requests = Iterable[tuple[str, str, Mapping[str, object]]]


class Port(Protocol):
    """What a prompt's bus and window code does for the driver."""

    def call_decide(self, call: CallDecide) -> None:
        """Call ``Decide`` on ``call.owner`` (its unique name); report the reply with
        :meth:`Driver.decide_replied`."""

    def load_pending(self, owner: str) -> None:
        """Call ``GetPendingRequests`` on ``owner``; report with :meth:`Driver.pending_replied`."""

    def render(self, view: View) -> None:
        """Draw ``view``."""

    def tick_in(self, seconds: float | None) -> None:
        """Call :meth:`Driver.refresh` after ``seconds`` (None: cancel a pending call)."""


class Driver:
    """See the module docstring."""

    def __init__(
        self, prompt: Prompt, port: Port, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.prompt = prompt
        self.port = port
        self.clock = clock
        self._owner_changes = 0

    # -- from the bus ---------------------------------------------------------------------

    def connected(self, unique_name: str) -> None:
        self.prompt.connected(unique_name)
        logger.info("connected to the system bus as %s", unique_name)

    def owner_lookup(self) -> int:
        """Before asking for the name's owner: a token for :meth:`owner_found`."""
        return self._owner_changes

    def owner_found(self, token: int, owner: str) -> None:
        """The reply of ``GetNameOwner`` ("" when nobody owns it)."""
        if token == self._owner_changes:  # else a NameOwnerChanged was newer than the reply
            self._feed(self.prompt.name_owner(owner))

    def owner_changed(self, owner: str) -> None:
        """``NameOwnerChanged`` for the service's name."""
        self._owner_changes += 1
        self._feed(self.prompt.name_owner(owner))

    def signal(self, sender: str, member: str, args: Sequence[object]) -> None:
        self._feed(self.prompt.signal(sender, member, args, self.clock()))

    def pending_replied(
        self, owner: str, error: str, message: str, requests: Requests = ()
    ) -> None:
        """``GetPendingRequests`` answered: an error name (and message), or the requests."""
        if error:
            effects = self.prompt.call_failed(owner, "GetPendingRequests", error, message)
        else:
            effects = self.prompt.pending_loaded(owner, requests)
        self._feed(effects)

    def decide_replied(self, call: CallDecide, error: str, message: str) -> None:
        """``Decide`` answered: an error name (and message), or "" when it worked."""
        if error:
            effects = self.prompt.call_failed(call.owner, "Decide", error, message, call.request_id)
        else:
            effects = self.prompt.decide_done(call.owner, call.request_id)
        self._feed(effects)

    # -- from the person ------------------------------------------------------------------

    def press(self, action: Action) -> None:
        effects = self.prompt.press(action)
        logger.debug("pressed %s%s", action.value, "" if effects else " (nothing to ask)")
        self._feed(effects)

    # -- out ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Redraw (and keep a countdown ticking)."""
        view = self.prompt.view(self.clock())
        self.port.render(view)
        self.port.tick_in(TICK_S if view.ticking else None)

    def _feed(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Report):
                report(effect)
            elif isinstance(effect, CallDecide):
                logger.info("Decide %s %s %d", effect.request_id, effect.decision, effect.delay_ms)
                self.port.call_decide(effect)
            elif isinstance(effect, LoadPending):
                self.port.load_pending(effect.owner)
        self.refresh()
