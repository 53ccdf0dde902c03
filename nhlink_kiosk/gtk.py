"""nhlink-kiosk-gtk: the reference GTK 3 prompt for org.nerveshub.Link.

GTK 3 through PyGObject; D-Bus through dbus-next on the GLib main loop, which
runs asyncio for it: gbulb where it loads (Debian 12's python3-gbulb with
python3-gi; from PyPI gbulb 0.6 needs PyGObject < 3.50), else PyGObject's own
asyncio integration (``gi.events``, PyGObject >= 3.50). The one in use is named
on stderr at start-up. The rules of what is shown and asked live in
:mod:`nhlink_kiosk.prompt`; this module only draws them and talks to the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from nhlink_kiosk import cli
from nhlink_kiosk.driver import Driver
from nhlink_kiosk.prompt import (
    BUS_NAME,
    DBUS_INTERFACE,
    DBUS_NAME,
    DBUS_PATH,
    INTERFACE,
    OBJECT_PATH,
    TITLE,
    Action,
    CallDecide,
    Prompt,
    View,
)

PROG = "nhlink-kiosk-gtk"
logger = logging.getLogger("nhlink_kiosk")

# What this prompt needs of the system (Debian: python3-gi, gir1.2-gtk-3.0,
# python3-dbus-next); main() says which is missing instead of a traceback.
try:
    import gi
    from dbus_next.aio.message_bus import MessageBus
    from dbus_next.constants import BusType, MessageType
    from dbus_next.message import Message
    from dbus_next.signature import Variant

    gi.require_version("Gtk", "3.0")
    gi.require_version("Gdk", "3.0")
    from gi.repository import Gdk, Gtk
except (ImportError, ValueError) as exc:  # ValueError: no GTK 3 typelib
    MISSING: Exception | None = exc
else:
    MISSING = None

CSS = b"""
.nhlink-heading { font-size: 150%; font-weight: bold; }
.nhlink-subheading { font-size: 120%; }
.nhlink-label { color: alpha(currentColor, 0.6); }
.nhlink-not-allowed { color: #c01c28; font-weight: bold; }
.nhlink-error { color: #c01c28; }
.nhlink-note { color: alpha(currentColor, 0.7); }
.nhlink-countdown { font-weight: bold; }
"""

GI_WITH_EVENTS = (3, 50)  # PyGObject's own asyncio integration (gi.events) since 3.50
Runner = Callable[[Coroutine[Any, Any, int]], int]


class LoopUnavailableError(RuntimeError):
    """Neither gbulb nor PyGObject's asyncio integration can run the GLib main loop."""


def event_loop() -> tuple[str, Runner]:
    """How asyncio runs on the GLib main loop here: (description, runner)."""
    if gi.version_info < GI_WITH_EVENTS:
        try:
            import gbulb  # noqa: PLC0415
        except ImportError as exc:
            gbulb_problem = f"cannot load gbulb: {exc}"
        else:
            gbulb.install(gtk=True)
            version = getattr(gbulb, "__version__", "?")
            return f"gbulb {version} (PyGObject {gi.__version__})", asyncio.run
    else:  # gbulb 0.6 installs there, then fails when the loop runs
        gbulb_problem = f"gbulb does not run on PyGObject {gi.__version__}, it needs < 3.50"
    try:
        from gi.events import GLibEventLoopPolicy  # noqa: PLC0415
    except ImportError as exc:
        raise LoopUnavailableError(
            f"gbulb cannot run here ({gbulb_problem}) and PyGObject {gi.__version__} has no "
            f"asyncio integration of its own (that needs PyGObject >= 3.50): {exc}"
        ) from None
    policy = GLibEventLoopPolicy()
    asyncio.set_event_loop_policy(policy)

    def run(main: Coroutine[Any, Any, int]) -> int:
        # The loop of GLib's default main context, where GTK's events arrive (the
        # policy's new_event_loop() would make a loop on a context of its own).
        with asyncio.Runner(loop_factory=policy.get_event_loop) as runner:
            return runner.run(main)

    return f"PyGObject {gi.__version__}'s gi.events ({gbulb_problem})", run


class PromptWindow:
    """The window: draws a :class:`View`, turns keys and clicks into :class:`Action`."""

    def __init__(self, on_action: Callable[[Action], None]) -> None:
        self._on_action = on_action
        provider = Gtk.CssProvider()
        provider.load_from_data(CSS)
        screen = Gdk.Screen.get_default()
        Gtk.StyleContext.add_provider_for_screen(
            screen, provider, Gtk.STYLE_PROVIDER_PRIORITY_APPLICATION
        )

        window = Gtk.Window(title=TITLE)
        window.set_default_size(560, -1)
        window.set_resizable(False)
        window.set_position(Gtk.WindowPosition.CENTER)
        window.set_type_hint(Gdk.WindowTypeHint.DIALOG)
        window.set_keep_above(True)
        window.set_icon_name("software-update-available")
        window.connect("delete-event", self._on_delete)
        window.connect("key-press-event", self._on_key)
        # Without a window manager nobody else gives us the keyboard: take it once mapped.
        window.connect("map-event", lambda *_: window.present() or False)
        self.window = window

        outer = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=14)
        outer.set_border_width(24)
        window.add(outer)

        header = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=18)
        self.icon = Gtk.Image.new_from_icon_name("software-update-available", Gtk.IconSize.DIALOG)
        self.icon.set_pixel_size(64)
        self.icon.set_valign(Gtk.Align.START)
        header.pack_start(self.icon, False, False, 0)
        titles = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        self.heading = self._label("nhlink-heading")
        self.subheading = self._label("nhlink-subheading")
        titles.pack_start(self.heading, False, False, 0)
        titles.pack_start(self.subheading, False, False, 0)
        header.pack_start(titles, True, True, 0)
        outer.pack_start(header, False, False, 0)

        # Everything below the heading lines up with it (past the icon).
        body = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=12)
        body.set_margin_start(82)
        outer.pack_start(body, False, False, 0)
        self.grid = Gtk.Grid(column_spacing=16, row_spacing=6)
        body.pack_start(self.grid, False, False, 0)
        self.description = self._label()
        body.pack_start(self.description, False, False, 0)
        self.not_allowed = self._label("nhlink-not-allowed")
        body.pack_start(self.not_allowed, False, False, 0)
        self.progress = Gtk.ProgressBar(show_text=True)
        body.pack_start(self.progress, False, False, 0)
        self.lines = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=4)
        body.pack_start(self.lines, False, False, 0)
        self.countdown = self._label("nhlink-countdown")
        body.pack_start(self.countdown, False, False, 0)

        self.button_box = Gtk.ButtonBox(orientation=Gtk.Orientation.HORIZONTAL, spacing=8)
        self.button_box.set_layout(Gtk.ButtonBoxStyle.END)
        outer.pack_end(self.button_box, False, False, 0)
        self.buttons: dict[Action, Any] = {}
        for action in (Action.SKIP, Action.LATER, Action.INSTALL):
            button = Gtk.Button.new_with_mnemonic(action.value)
            button.set_can_default(True)
            button.connect("clicked", lambda _b, a=action: self._on_action(a))
            self.button_box.pack_start(button, False, False, 0)
            self.buttons[action] = button
        self.button_box.set_child_secondary(self.buttons[Action.SKIP], True)
        self.buttons[Action.INSTALL].get_style_context().add_class("suggested-action")
        outer.show_all()
        self._shown: tuple[str, str] | None = None

    def _label(self, css_class: str | None = None) -> Any:
        label = Gtk.Label(xalign=0.0)
        label.set_line_wrap(True)
        label.set_max_width_chars(50)
        if css_class:
            label.get_style_context().add_class(css_class)
        return label

    def _on_delete(self, *_: object) -> bool:
        self._on_action(Action.CLOSE)
        return True  # the prompt decides whether the window goes

    def _on_key(self, _window: object, event: Any) -> bool:
        if event.keyval == Gdk.KEY_Escape:
            self._on_action(Action.LATER)
            return True
        return False

    def render(self, view: View) -> None:
        """Show ``view`` (all text as plain text: it comes from the hub)."""
        window = self.window
        if not view.visible:
            if window.get_visible():
                window.hide()
                logger.debug("window hidden")
            self._shown = None
            return
        window.set_title(view.title)
        self.heading.set_text(view.heading)
        self.subheading.set_text(view.subheading)
        self.subheading.set_visible(bool(view.subheading))
        for child in self.grid.get_children():
            self.grid.remove(child)
        for row, (name, value) in enumerate(view.rows):
            label = self._label("nhlink-label")
            label.set_text(name)
            label.set_line_wrap(False)
            self.grid.attach(label, 0, row, 1, 1)
            text = self._label()
            text.set_text(value)
            self.grid.attach(text, 1, row, 1, 1)
        self.grid.show_all()
        self.grid.set_visible(bool(view.rows))
        self.description.set_text(view.description)
        self.description.set_visible(bool(view.description))
        self.not_allowed.set_text(view.not_allowed)
        self.not_allowed.set_visible(bool(view.not_allowed))
        self.progress.set_visible(view.progress is not None)
        if view.progress is not None:
            self.progress.set_fraction(view.progress / 100)
            self.progress.set_text(f"{view.progress} %")
        for child in self.lines.get_children():
            self.lines.remove(child)
        for line in view.lines:
            label = self._label(f"nhlink-{line.kind}")
            label.set_text(line.text)
            self.lines.pack_start(label, False, False, 0)
        self.lines.show_all()
        self.lines.set_visible(bool(view.lines))
        self.countdown.set_text(view.countdown)
        self.countdown.set_visible(bool(view.countdown))
        shown = {b.action: b for b in view.buttons}
        for action, button in self.buttons.items():
            spec = shown.get(action)
            button.set_visible(spec is not None)
            if spec is not None:
                button.set_label(spec.label)
                button.set_sensitive(spec.enabled)
        self.button_box.set_visible(bool(view.buttons))
        # Return answers with the default button: it gets the focus when something new
        # is shown, or when the focus was lost (its button was disabled meanwhile).
        key = (view.heading, view.subheading)
        default = next((b for b in view.buttons if b.default), None)
        if default is not None:
            button = self.buttons[default.action]
            window.set_default(button)
            focus = window.get_focus()
            lost = focus is None or not (focus.get_sensitive() and focus.get_visible())
            if (key != self._shown or lost) and button.get_sensitive():
                button.grab_focus()
        self._shown = key
        if not window.get_visible():
            window.show()
            window.present()
        logger.debug(
            "window shown: %s | progress bar %s",
            window.get_title(),
            f"{self.progress.get_fraction() * 100:.0f} %" if self.progress.get_visible() else "-",
        )


class BusLink:
    """dbus-next on the system bus: what arrives goes to the :class:`Driver`; this is its
    :class:`~nhlink_kiosk.driver.Port`."""

    def __init__(self, prompt: Prompt) -> None:
        self.driver = Driver(prompt, self)
        self.window = PromptWindow(self.driver.press)
        self.bus: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tick: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self.driver.connected(self.bus.unique_name)
        self.bus.add_message_handler(self._on_message)
        # Subscribe first, then read the state (nothing is missed in between).
        for rule in (
            f"type='signal',sender='{DBUS_NAME}',interface='{DBUS_INTERFACE}',"
            f"member='NameOwnerChanged',arg0='{BUS_NAME}'",
            f"type='signal',sender='{BUS_NAME}',interface='{INTERFACE}',path='{OBJECT_PATH}'",
        ):
            error, message = _error(await self._call(DBUS_NAME, DBUS_PATH, "AddMatch", "s", rule))
            if error:
                raise RuntimeError(f"AddMatch: {error}: {message}")
        token = self.driver.owner_lookup()
        reply = await self._call(DBUS_NAME, DBUS_PATH, "GetNameOwner", "s", BUS_NAME)
        self.driver.owner_found(token, "" if reply.error_name else str(reply.body[0]))

    async def _call(
        self, destination: str, path: str, member: str, signature: str = "", *body: object
    ) -> Any:
        interface = DBUS_INTERFACE if destination == DBUS_NAME else INTERFACE
        return await self.bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=list(body),
            )
        )

    def _on_message(self, msg: Any) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.interface == DBUS_INTERFACE and msg.member == "NameOwnerChanged":
            if msg.sender == DBUS_NAME and msg.body and msg.body[0] == BUS_NAME:
                self.driver.owner_changed(str(msg.body[2]))
        elif msg.interface == INTERFACE and msg.path == OBJECT_PATH:
            self.driver.signal(msg.sender, msg.member, [_plain(value) for value in msg.body])

    # -- the Port ---------------------------------------------------------------------------
    # Calls go to the owner's unique name: if the service restarted meanwhile, the bus
    # answers that nobody has that name; a call never reaches the successor.

    def call_decide(self, call: CallDecide) -> None:
        self._spawn(self._decide(call))

    def load_pending(self, owner: str) -> None:
        self._spawn(self._load_pending(owner))

    def render(self, view: View) -> None:
        self.window.render(view)

    def tick_in(self, seconds: float | None) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if seconds is not None:
            self._tick = asyncio.get_running_loop().call_later(seconds, self.driver.refresh)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_pending(self, owner: str) -> None:
        reply = await self._call(owner, OBJECT_PATH, "GetPendingRequests")
        error, message = _error(reply)
        requests = [] if error else [(str(r), str(k), _plain(i)) for r, k, i in reply.body[0]]
        self.driver.pending_replied(owner, error, message, requests)

    async def _decide(self, call: CallDecide) -> None:
        args = (call.request_id, call.decision, call.delay_ms)
        reply = await self._call(call.owner, OBJECT_PATH, "Decide", "sst", *args)
        self.driver.decide_replied(call, *_error(reply))

    async def wait_closed(self) -> None:
        await self.bus.wait_for_disconnect()


def _error(reply: Any) -> tuple[str, str]:
    """(error name, message) of an error reply; ("", "") for a method return."""
    if reply.message_type != MessageType.ERROR:
        return "", ""
    return str(reply.error_name), str(reply.body[0]) if reply.body else ""


def _plain(value: Any) -> Any:
    """A dbus-next value with every Variant replaced by its plain value."""
    if isinstance(value, Variant):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def _run(args: Any, loop_name: str) -> int:
    if not Gtk.init_check(sys.argv)[0]:
        logger.error("cannot open the display %r", os.environ.get("DISPLAY", ""))
        return 1
    logger.info("event loop: %s", loop_name)
    prompt = Prompt(args.later_delay * 1000, cli.who_am_i())
    link = BusLink(prompt)
    try:
        await link.start()
    except Exception as exc:  # no system bus, or it refused us
        logger.error("cannot use the system bus: %s", exc)
        return 1
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def stop_now() -> None:
        if not stop.done():
            stop.set_result(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop_now)
    closed = asyncio.ensure_future(link.wait_closed())
    await asyncio.wait([stop, closed], return_when=asyncio.FIRST_COMPLETED)
    if closed.done():
        logger.error("the system bus connection was closed")
        return 1
    closed.cancel()
    link.bus.disconnect()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``nhlink-kiosk-gtk [--later-delay SECONDS] [--verbose]``"""
    args = cli.parser(PROG, "GTK prompt for nhlink-dbus update decisions").parse_args(argv)
    cli.setup_logging(PROG, args.verbose)
    if MISSING is not None:
        logger.error("cannot start: %s", MISSING)
        return 2
    try:
        loop_name, run = event_loop()
    except LoopUnavailableError as exc:
        logger.error("cannot start: %s", exc)
        return 2
    return run(_run(args, loop_name))


if __name__ == "__main__":
    sys.exit(main())
