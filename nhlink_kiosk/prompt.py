"""What a kiosk prompt shows and asks, without a toolkit or a D-Bus library.

Both reference prompts feed a :class:`Prompt` what they receive from the bus and
the keys pressed, perform the effects it returns (:class:`CallDecide`,
:class:`LoadPending`, :class:`Report`) and draw :meth:`Prompt.view`. Time is an
argument (``now``: seconds on a monotonic clock). The rules:

* **The service is whoever owns** ``org.nerveshub.Link`` **now** (its unique
  name, from ``NameOwnerChanged`` / ``GetNameOwner``). Signals and replies from
  any other sender, or for an earlier owner, are dropped.
* **A new owner is a new service.** Everything learnt from the old one is
  forgotten: its requests, the Decide in flight, progress, failures, notices
  (only a reboot countdown outlives the owner's exit: that is the reboot).
  Request ids are only taken from the current owner and only sent back to the
  owner that gave them (:class:`CallDecide` names it; the prompt's bus code
  drops a call whose owner is no longer current). A new owner's pending
  requests are read again (:class:`LoadPending`).
* **Offers queue** in arrival order, pending ones (``GetPendingRequests``) too;
  the first is shown. The same id offered again (after a reschedule) is shown
  again with its fresh info. An id already decided is not taken back from a
  ``GetPendingRequests`` reply that crossed the decision.
* **Keys.** On an offer: ``INSTALL`` (Return; the default button) answers
  ``apply`` (``download`` for an archive), ``LATER`` (Escape, or closing the
  window) ``reschedule`` by ``later_delay_ms``, ``SKIP`` (Alt+S) ``ignore``. One
  Decide at a time: the buttons wait for its reply. On a failure or a notice
  any of them closes it; while installing or restarting they do nothing.
* **Decisions** (``DecisionMade``) remove the request, whoever decided. An
  ``apply`` — by this prompt, another UI, the timeout or policy — shows the
  update's progress; any other answer by someone else simply closes the dialog.
* **An update's run:** ``FwupProgress`` fills the bar (a prompt started mid-way
  joins in), ``FwupMessage`` warnings/errors and ``Error`` are listed under it,
  ``UpdateFinished`` says installed or failed, ``RebootScheduled`` counts down.
  Offers wait until a failed run is closed.
* **Not allowed** (``AccessDenied`` from ``GetPendingRequests`` or ``Decide``:
  the bus policy's or the service's): offers are still shown, with the buttons
  disabled and a line that says why, and the title says so; one
  :class:`Report` goes to stderr. It is asked again of every new owner.
* ``ArchiveReady`` shows a notice with the archive's path.

Every value in an info dictionary comes from the hub or a file: the prompts
show them as plain text, never as markup.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# The D-Bus API (introspection/org.nerveshub.Link1.xml): the only thing of
# nhlink-dbus a prompt uses. tests/kiosk checks these against nhlink_dbus.names.
BUS_NAME = "org.nerveshub.Link"
OBJECT_PATH = "/org/nerveshub/Link"
INTERFACE = "org.nerveshub.Link1"
DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
DBUS_INTERFACE = "org.freedesktop.DBus"
ERROR_UNKNOWN_REQUEST = "org.nerveshub.Link1.Error.UnknownRequest"
ACCESS_DENIED_ERRORS = frozenset(
    {"org.freedesktop.DBus.Error.AccessDenied", "org.nerveshub.Link1.Error.AccessDenied"}
)

TITLE = "Software update"
DEFAULT_LATER_DELAY_S = 900

UPDATE = "update"
ARCHIVE = "archive"

SOURCES = {"hub": "NervesHub", "removable": "Removable media", "file": "Local file"}


class Action(enum.Enum):
    """What the person in front of the screen did."""

    INSTALL = "install"  # Return: the default button
    LATER = "later"  # Escape
    SKIP = "skip"  # Alt+S
    CLOSE = "close"  # the window's close button (a window manager's)


# -- effects -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallDecide:
    """Call ``Decide(request_id, decision, delay_ms)`` on ``owner``; report the reply with
    :meth:`Prompt.decide_done` or :meth:`Prompt.call_failed`."""

    owner: str
    request_id: str
    decision: str
    delay_ms: int


@dataclass(frozen=True, slots=True)
class LoadPending:
    """Call ``GetPendingRequests()`` on ``owner``; report with :meth:`Prompt.pending_loaded`
    or :meth:`Prompt.call_failed`."""

    owner: str


@dataclass(frozen=True, slots=True)
class Report:
    """A line for stderr (``level``: ``info``, ``warning`` or ``error``)."""

    level: str
    text: str


Effect = CallDecide | LoadPending | Report


# -- the view --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Button:
    action: Action
    label: str  # "_" before the mnemonic letter (GTK's convention; Qt uses "&")
    enabled: bool = True
    default: bool = False


@dataclass(frozen=True, slots=True)
class Line:
    kind: str  # "info", "note" (the applier's messages) or "error"
    text: str


@dataclass(frozen=True, slots=True)
class View:
    """Everything a prompt window shows. ``visible`` false: no window."""

    visible: bool = False
    title: str = TITLE
    heading: str = ""
    subheading: str = ""
    rows: tuple[tuple[str, str], ...] = ()
    description: str = ""
    not_allowed: str = ""  # the "not allowed" line, empty when allowed
    lines: tuple[Line, ...] = ()
    progress: int | None = None  # percent; None: no progress bar
    countdown: str = ""
    buttons: tuple[Button, ...] = ()
    ticking: bool = False  # redraw every second (a countdown)


# -- formatting --------------------------------------------------------------------------------


def format_size(size: object) -> str:
    """Bytes as people read them (SI units): ``4.2 MB``; empty for a missing or bad value."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return ""
    if size < 1000:
        return f"{size} bytes" if size != 1 else "1 byte"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _text(info: Mapping[str, object], key: str) -> str:
    value = info.get(key)
    if isinstance(value, bool) or value is None:
        return ""
    return " ".join(str(value).split())  # one line: no control characters, no layout tricks


def offer_rows(info: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """The (label, value) rows describing an offer; missing values are left out."""
    source = _text(info, "source")
    rows = [
        ("Product", _text(info, "product")),
        ("Version", _text(info, "version")),
        ("Size", format_size(info.get("size"))),
        ("Source", SOURCES.get(source, source)),
    ]
    return tuple((label, value) for label, value in rows if value)


def offer_name(kind: str, info: Mapping[str, object]) -> str:
    """``product version``, or what is known of it."""
    name = " ".join(p for p in (_text(info, "product"), _text(info, "version")) if p)
    if name:
        return name
    return "Firmware update" if kind == UPDATE else "Archive"


def description(info: Mapping[str, object]) -> str:
    value = info.get("description")
    if not isinstance(value, str):
        return ""
    # Paragraphs are kept; anything else that is not printable is dropped.
    return "\n".join(
        "".join(ch for ch in line if ch.isprintable()).strip() for line in value.splitlines()
    ).strip()


def decided_by_me(decided_by: str, unique_name: str) -> bool:
    """``DecisionMade.decided_by`` is ``uid=N :1.42`` for a caller: is that caller us?"""
    return bool(unique_name) and unique_name in decided_by.split()


# -- the prompt --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    request_id: str
    kind: str  # UPDATE or ARCHIVE
    info: Mapping[str, object]


class Stage(enum.Enum):
    INSTALLING = "installing"
    INSTALLED = "installed"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass(slots=True)
class _Run:
    """An update being applied (and what follows it)."""

    name: str
    decided_by: str = ""  # someone else, or "" (us, or not known)
    stage: Stage = Stage.INSTALLING
    progress: int = 0
    lines: list[Line] = field(default_factory=list)
    result: str = ""
    reboot_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Notice:
    info: Mapping[str, object]
    path: str


class Prompt:
    """See the module docstring. ``who`` names this user in the "not allowed" line."""

    def __init__(self, later_delay_ms: int, who: str) -> None:
        if later_delay_ms <= 0:
            raise ValueError("later_delay_ms must be > 0")
        self.later_delay_ms = later_delay_ms
        self.who = who
        self.me = ""  # our unique name on the bus
        self.owner = ""  # the service's unique name, "" while it is not running
        self.allowed: bool | None = None  # None: not known yet
        self._queue: list[Request] = []
        self._decided: set[str] = set()
        self._deciding: str | None = None
        self._offer_error = ""
        self._run: _Run | None = None
        self._notices: list[_Notice] = []

    # -- inputs from the bus ---------------------------------------------------------------

    def connected(self, unique_name: str) -> None:
        """Our own connection's unique name (to recognise our decisions)."""
        self.me = unique_name

    def name_owner(self, owner: str) -> list[Effect]:
        """The owner of the service's name is now ``owner`` ("" = nobody)."""
        if owner == self.owner:
            return []
        self.owner = owner
        self._queue.clear()
        self._decided.clear()
        self._deciding = None
        self._offer_error = ""
        self._notices.clear()
        self.allowed = None
        restarting = self._run is not None and self._run.stage is Stage.RESTARTING
        if owner or not restarting:  # a countdown outlives the owner's exit (the reboot)
            self._run = None
        if not owner:
            return [Report("info", f"{BUS_NAME} is not running; waiting for it")]
        return [Report("info", f"{BUS_NAME} is {owner}"), LoadPending(owner)]

    def pending_loaded(
        self, owner: str, requests: Iterable[tuple[str, str, Mapping[str, object]]]
    ) -> list[Effect]:
        """The reply of ``GetPendingRequests`` asked of ``owner``."""
        if owner != self.owner:
            return []
        out: list[Effect] = []
        if self.allowed is not True:
            self.allowed = True
            out.append(Report("info", "allowed to decide"))
        for request_id, kind, info in requests:
            if request_id not in self._decided:
                out += self._offer(Request(request_id, kind, dict(info)))
        return out

    def decide_done(self, owner: str, request_id: str) -> list[Effect]:
        """``Decide`` returned (the decision itself arrives as ``DecisionMade``)."""
        if owner == self.owner and self._deciding == request_id:
            self._deciding = None
            self.allowed = True
        return []

    def call_failed(
        self, owner: str, member: str, error_name: str, message: str, request_id: str = ""
    ) -> list[Effect]:
        """A call asked of ``owner`` (``member``: its name) got an error reply."""
        if owner != self.owner:
            return []
        if member == "Decide" and self._deciding == request_id:
            self._deciding = None
        if error_name in ACCESS_DENIED_ERRORS:
            already = self.allowed is False
            self.allowed = False
            return [] if already else [Report("error", self.not_allowed_text())]
        if member != "Decide":
            return [Report("warning", f"{member} failed: {error_name}: {message}")]
        if error_name == ERROR_UNKNOWN_REQUEST:  # decided elsewhere or timed out meanwhile
            self._drop(request_id)
            return [Report("info", f"{request_id} is no longer pending")]
        self._offer_error = message or error_name
        return [Report("error", f"Decide {request_id} failed: {error_name}: {message}")]

    def signal(self, sender: str, member: str, args: Sequence[object], now: float) -> list[Effect]:
        """A signal of ``org.nerveshub.Link1`` (``args``: its plain values)."""
        if not sender or sender != self.owner:
            return []
        handler = getattr(self, f"_on_{member}", None)
        if handler is None:
            return []
        try:
            out: list[Effect] = handler(*args, now=now)
        except (TypeError, ValueError) as exc:  # a signal we do not understand
            return [Report("warning", f"ignored {member}{tuple(args)!r}: {exc}")]
        return out

    # -- input from the person ---------------------------------------------------------------

    def press(self, action: Action) -> list[Effect]:
        """A key or button; returns the Decide to call, if any."""
        run = self._run
        if run is not None:
            if run.stage is Stage.FAILED:
                self._run = None
            return []
        if self._queue:
            return self._answer(self._queue[0], action)
        if self._notices:
            self._notices.pop(0)
        return []

    # -- output -------------------------------------------------------------------------------

    def not_allowed_text(self) -> str:
        return (
            f"Not allowed to decide: {self.who} may not answer update requests "
            "(only root and members of the service's group, nhlink by default)."
        )

    def view(self, now: float) -> View:
        """What to show at ``now``."""
        if self._run is not None:
            return self._run_view(self._run, now)
        if self._queue:
            return self._offer_view(self._queue[0])
        if self._notices:
            notice = self._notices[0]
            return View(
                visible=True,
                title=f"{TITLE} — archive ready",
                heading="An archive is ready",
                subheading=offer_name(ARCHIVE, notice.info),
                rows=(*offer_rows(notice.info), ("Saved as", notice.path)),
                description=description(notice.info),
                buttons=(Button(Action.INSTALL, "_OK", default=True),),
            )
        return View()

    def pending_ids(self) -> list[str]:
        """The queued offers' request ids, first (shown) first."""
        return [r.request_id for r in self._queue]

    # -- signals --------------------------------------------------------------------------------

    def _on_UpdateAvailable(
        self, request_id: str, info: Mapping[str, object], now: float
    ) -> list[Effect]:
        return self._offer(Request(str(request_id), UPDATE, dict(info)))

    def _on_ArchiveAvailable(
        self, request_id: str, info: Mapping[str, object], now: float
    ) -> list[Effect]:
        return self._offer(Request(str(request_id), ARCHIVE, dict(info)))

    def _on_DecisionMade(
        self, request_id: str, decision: str, delay_ms: int, decided_by: str, now: float
    ) -> list[Effect]:
        request = next((r for r in self._queue if r.request_id == request_id), None)
        self._drop(request_id)
        self._decided.add(request_id)
        mine = decided_by_me(decided_by, self.me)
        out: list[Effect] = [Report("info", f"{request_id}: {decision} (by {decided_by})")]
        if decision == "apply":
            name = offer_name(UPDATE, request.info) if request else "Firmware update"
            self._run = _Run(name, "" if mine else decided_by)
        return out

    def _on_FwupProgress(self, percent: int, now: float) -> list[Effect]:
        percent = min(max(int(percent), 0), 100)
        if self._run is None:
            self._run = _Run("Firmware update")
        if self._run.stage is Stage.INSTALLING:
            self._run.progress = percent
        return []

    def _on_FwupMessage(self, kind: str, code: int, message: str, now: float) -> list[Effect]:
        # fwup sends its firmware's info() texts as WN frames (util.h: FRAMING_TYPE_INFO
        # "WN"), which arrive here as "warning": shown as notes, errors as errors.
        if kind not in ("warning", "error"):
            return []
        line = Line("error" if kind == "error" else "note", _one_line(message))
        if self._run is not None and self._run.stage is Stage.INSTALLING:
            self._run.lines.append(line)
        return [Report("error" if kind == "error" else "info", f"applier: {message}")]

    def _on_Error(self, message: str, now: float) -> list[Effect]:
        if self._run is not None and self._run.stage is Stage.INSTALLING:
            self._run.lines.append(Line("error", _one_line(message)))
        return [Report("warning", f"service error: {message}")]

    def _on_UpdateFinished(
        self, request_id: str, success: bool, message: str, now: float
    ) -> list[Effect]:
        run = self._run if self._run is not None else _Run("Firmware update")
        self._run = run
        if success:
            run.stage, run.progress = Stage.INSTALLED, 100
            return [Report("info", f"{request_id} installed")]
        run.stage, run.result = Stage.FAILED, _one_line(message)
        return [Report("error", f"{request_id} failed: {message}")]

    def _on_RebootScheduled(self, delay_ms: int, now: float) -> list[Effect]:
        run = self._run if self._run is not None else _Run("Firmware update", progress=100)
        self._run = run
        run.stage, run.reboot_at = Stage.RESTARTING, now + int(delay_ms) / 1000
        return [Report("info", f"restarting in {int(delay_ms)} ms")]

    def _on_ArchiveReady(
        self, request_id: str, info: Mapping[str, object], path: str, now: float
    ) -> list[Effect]:
        self._notices.append(_Notice(dict(info), str(path)))
        return [Report("info", f"{request_id} ready: {path}")]

    # -- helpers ----------------------------------------------------------------------------------

    def _offer(self, request: Request) -> list[Effect]:
        if request.kind not in (UPDATE, ARCHIVE):
            return []
        self._decided.discard(request.request_id)
        for index, queued in enumerate(self._queue):
            if queued.request_id == request.request_id:
                self._queue[index] = request
                return []
        self._queue.append(request)
        name = offer_name(request.kind, request.info)
        return [Report("info", f"{request.request_id}: {request.kind} {name} offered")]

    def _drop(self, request_id: str) -> None:
        if self._queue and self._queue[0].request_id == request_id:
            self._offer_error = ""
        self._queue = [r for r in self._queue if r.request_id != request_id]
        if self._deciding == request_id:
            self._deciding = None

    def _answer(self, request: Request, action: Action) -> list[Effect]:
        if self.allowed is False or self._deciding is not None or not self.owner:
            return []
        if action is Action.INSTALL:
            decision, delay = ("apply" if request.kind == UPDATE else "download"), 0
        elif action is Action.SKIP:
            decision, delay = "ignore", 0
        else:  # LATER, CLOSE
            decision, delay = "reschedule", self.later_delay_ms
        self._deciding = request.request_id
        self._offer_error = ""
        return [CallDecide(self.owner, request.request_id, decision, delay)]

    def _offer_view(self, request: Request) -> View:
        update = request.kind == UPDATE
        allowed = self.allowed is not False
        enabled = allowed and self._deciding is None
        what = "update" if update else "archive"
        title = f"{TITLE} — {what} available" if allowed else f"{TITLE} — not allowed to decide"
        lines = (Line("error", self._offer_error),) if self._offer_error else ()
        return View(
            visible=True,
            title=title,
            heading="A software update is available" if update else "An archive is available",
            subheading=offer_name(request.kind, request.info),
            rows=offer_rows(request.info),
            description=description(request.info),
            not_allowed="" if allowed else self.not_allowed_text(),
            lines=lines,
            buttons=(
                Button(Action.SKIP, "_Skip", enabled),
                Button(Action.LATER, "_Later", enabled),
                Button(Action.INSTALL, "_Install now" if update else "_Download", enabled, True),
            ),
        )

    def _run_view(self, run: _Run, now: float) -> View:
        lines = [Line("info", _decided_line(run.decided_by))] if run.decided_by else []
        lines += run.lines
        countdown, ticking = "", False
        buttons: tuple[Button, ...] = ()
        progress: int | None = run.progress
        if run.stage is Stage.INSTALLING:
            title = f"{TITLE} — installing {run.progress} %"
            heading = "Installing a software update"
            lines.append(Line("info", "Please keep the device switched on."))
        elif run.stage is Stage.INSTALLED:
            title, heading = f"{TITLE} — installed", "Software update installed"
            countdown = "The device will restart shortly."
        elif run.stage is Stage.RESTARTING:
            left = max(0, math.ceil((run.reboot_at or now) - now))
            title = f"{TITLE} — restarting in {left} s" if left else f"{TITLE} — restarting"
            heading = "Software update installed"
            countdown = f"Restarting in {left} s" if left else "Restarting now…"
            ticking = left > 0
        else:
            title, heading = f"{TITLE} — failed", "The software update failed"
            lines.append(Line("error", run.result or "The update could not be installed."))
            countdown = "The device keeps running its current software."
            progress = None
            buttons = (Button(Action.INSTALL, "_Close", default=True),)
        return View(
            visible=True,
            title=title,
            heading=heading,
            subheading=run.name,
            lines=tuple(lines),
            progress=progress,
            countdown=countdown,
            buttons=buttons,
            ticking=ticking,
        )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _decided_line(decided_by: str) -> str:
    if decided_by == "timeout":
        return "Installed automatically: nobody answered in time."
    if decided_by == "policy":
        return "Installed by the device's policy."
    return f"Decided on another screen ({decided_by})."
