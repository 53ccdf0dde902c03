"""nhlink-kiosk-qt: the reference Qt prompt for org.nerveshub.Link, through QtDBus only.

It uses no D-Bus library but Qt's own (QtDBus), to show that a kiosk app needs
nothing of nhlink-dbus but its D-Bus API. It runs on Debian 12's PyQt5
(``python3-pyqt5``); PyQt6 works too (``--qt``, :mod:`nhlink_kiosk.qt_binding`,
which also says why PySide6 does not). The rules of what is shown and asked live in
:mod:`nhlink_kiosk.prompt`; this module only draws them and talks to the bus.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nhlink_kiosk import cli, qt_binding
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

PROG = "nhlink-kiosk-qt"
logger = logging.getLogger("nhlink_kiosk")

WIDTH = 560
STYLE = """
QLabel#label { color: #6b6b6b; }
QLabel#not-allowed { color: #c01c28; font-weight: bold; }
QLabel#error { color: #c01c28; }
QLabel#note { color: #505050; }
QLabel#countdown { font-weight: bold; }
"""


def mnemonic(label: str) -> str:
    """GTK's ``_`` mnemonic marker as Qt's ``&`` (and a literal ``&`` as ``&&``)."""
    return label.replace("&", "&&").replace("_", "&", 1)


def build(qt: qt_binding.Binding) -> type:
    """The bus link class on ``qt`` (it and its window derive from ``qt``'s classes)."""
    QtCore, QtGui, QtWidgets, QtDBus = qt.QtCore, qt.QtGui, qt.QtWidgets, qt.QtDBus
    Qt = QtCore.Qt
    Dialog: Any = QtWidgets.QDialog
    QObject: Any = QtCore.QObject
    plain = Qt.TextFormat.PlainText

    class PromptWindow(Dialog):
        """The window: draws a :class:`View`, turns keys and clicks into :class:`Action`.

        QDialog gives the keys: Return clicks the default button, Escape calls
        :meth:`reject` (Later), ``&Skip`` is Alt+S."""

        def __init__(self, on_action: Callable[[Action], None]) -> None:
            super().__init__(None, Qt.WindowType.Dialog | Qt.WindowType.WindowStaysOnTopHint)
            self.on_action = on_action
            self.setWindowTitle(TITLE)
            self.setStyleSheet(STYLE)
            icon = QtGui.QIcon.fromTheme("software-update-available")
            if icon.isNull():
                QtGui.QIcon.setThemeName("Adwaita")
                icon = QtGui.QIcon.fromTheme("software-update-available")
            self.setWindowIcon(icon)

            outer = QtWidgets.QVBoxLayout(self)
            outer.setContentsMargins(24, 24, 24, 24)
            outer.setSpacing(14)
            outer.setSizeConstraint(QtWidgets.QLayout.SizeConstraint.SetFixedSize)
            outer.addSpacerItem(QtWidgets.QSpacerItem(WIDTH - 48, 0))  # the width; height fits
            header = QtWidgets.QHBoxLayout()
            header.setSpacing(18)
            self.icon = QtWidgets.QLabel()
            self.icon.setPixmap(icon.pixmap(64, 64))
            self.icon.setAlignment(Qt.AlignmentFlag.AlignTop)
            header.addWidget(self.icon)
            titles = QtWidgets.QVBoxLayout()
            titles.setSpacing(4)
            self.heading = self._label("heading", scale=1.5, bold=True)
            self.subheading = self._label("subheading", scale=1.2)
            titles.addWidget(self.heading)
            titles.addWidget(self.subheading)
            titles.addStretch(1)
            header.addLayout(titles, 1)
            outer.addLayout(header)

            # Everything below the heading lines up with it (past the icon).
            body = QtWidgets.QVBoxLayout()
            body.setContentsMargins(82, 0, 0, 0)
            body.setSpacing(12)
            outer.addLayout(body)
            self.rows = QtWidgets.QWidget()
            self.grid = QtWidgets.QGridLayout(self.rows)
            self.grid.setContentsMargins(0, 0, 0, 0)
            self.grid.setHorizontalSpacing(16)
            self.grid.setVerticalSpacing(6)
            self.grid.setColumnStretch(1, 1)
            body.addWidget(self.rows)
            self.description = self._label()
            body.addWidget(self.description)
            self.not_allowed = self._label("not-allowed", bold=True)
            body.addWidget(self.not_allowed)
            self.progress = QtWidgets.QProgressBar()
            self.progress.setRange(0, 100)
            self.progress.setFormat("%p %")
            body.addWidget(self.progress)
            self.lines = QtWidgets.QWidget()
            self.lines_layout = QtWidgets.QVBoxLayout(self.lines)
            self.lines_layout.setContentsMargins(0, 0, 0, 0)
            body.addWidget(self.lines)
            self.countdown = self._label("countdown", bold=True)
            body.addWidget(self.countdown)

            self.button_row = QtWidgets.QWidget()
            buttons = QtWidgets.QHBoxLayout(self.button_row)
            buttons.setContentsMargins(0, 8, 0, 0)
            self.buttons: dict[Action, Any] = {}
            for action in (Action.SKIP, Action.LATER, Action.INSTALL):
                button = QtWidgets.QPushButton()
                button.setAutoDefault(False)
                button.clicked.connect(lambda _checked=False, a=action: self.on_action(a))
                self.buttons[action] = button
            buttons.addWidget(self.buttons[Action.SKIP])
            buttons.addStretch(1)
            buttons.addWidget(self.buttons[Action.LATER])
            buttons.addWidget(self.buttons[Action.INSTALL])
            outer.addWidget(self.button_row)
            self._shown: tuple[str, str] | None = None

        def _label(self, name: str = "", scale: float = 1.0, bold: bool = False) -> Any:
            label = QtWidgets.QLabel()
            label.setTextFormat(plain)  # hub text is never markup
            label.setWordWrap(True)
            if name:
                label.setObjectName(name)
            if scale != 1.0 or bold:
                font = label.font()
                font.setPointSizeF(font.pointSizeF() * scale)
                font.setBold(bold)
                label.setFont(font)
            return label

        # QDialog's own keys and the window manager's close button
        def reject(self) -> None:
            self.on_action(Action.LATER)

        def accept(self) -> None:
            pass

        def closeEvent(self, event: Any) -> None:
            event.ignore()
            self.on_action(Action.CLOSE)

        def render(self, view: View) -> None:
            if not view.visible:
                if self.isVisible():
                    self.hide()
                    logger.debug("window hidden")
                self._shown = None
                return
            self.setWindowTitle(view.title)
            self.heading.setText(view.heading)
            self.subheading.setText(view.subheading)
            self.subheading.setVisible(bool(view.subheading))
            while self.grid.count():
                item = self.grid.takeAt(0)
                item.widget().deleteLater()
            for row, (name, value) in enumerate(view.rows):
                label = self._label("label")
                label.setText(name)
                label.setWordWrap(False)
                self.grid.addWidget(label, row, 0)
                text = self._label()
                text.setText(value)
                self.grid.addWidget(text, row, 1)
            self.rows.setVisible(bool(view.rows))
            self.description.setText(view.description)
            self.description.setVisible(bool(view.description))
            self.not_allowed.setText(view.not_allowed)
            self.not_allowed.setVisible(bool(view.not_allowed))
            self.progress.setVisible(view.progress is not None)
            if view.progress is not None:
                self.progress.setValue(view.progress)
            while self.lines_layout.count():
                self.lines_layout.takeAt(0).widget().deleteLater()
            for line in view.lines:
                label = self._label(line.kind)
                label.setText(line.text)
                self.lines_layout.addWidget(label)
            self.lines.setVisible(bool(view.lines))
            self.countdown.setText(view.countdown)
            self.countdown.setVisible(bool(view.countdown))
            shown = {b.action: b for b in view.buttons}
            for action, button in self.buttons.items():
                spec = shown.get(action)
                button.setVisible(spec is not None)
                if spec is not None:
                    button.setText(mnemonic(spec.label))
                    button.setEnabled(spec.enabled)
                    button.setDefault(spec.default)
            self.button_row.setVisible(bool(view.buttons))
            # Return answers with the default button: it gets the focus when something
            # new is shown, or when the focus was lost (its button was disabled meanwhile).
            key = (view.heading, view.subheading)
            default = next((b for b in view.buttons if b.default), None)
            if default is not None and default.enabled:
                focus = self.focusWidget()
                lost = focus is None or not (focus.isEnabled() and focus.isVisible())
                if key != self._shown or lost:
                    self.buttons[default.action].setFocus()
            self._shown = key
            if not self.isVisible():
                self.show()
                self.raise_()
                self.activateWindow()
            logger.debug(
                "window shown: %s | progress bar %s",
                self.windowTitle(),
                f"{self.progress.value()} %" if self.progress.isVisible() else "-",
            )

    class BusLink(QObject):
        """QtDBus on the system bus: what arrives goes to the :class:`Driver`; this is its
        :class:`~nhlink_kiosk.driver.Port`."""

        def __init__(self, prompt: Prompt, bus: Any) -> None:
            super().__init__()
            self.bus = bus
            self.driver = Driver(prompt, self)
            self.window = PromptWindow(self.driver.press)
            self._watchers: set[Any] = set()
            self._tick = QtCore.QTimer(self)
            self._tick.setSingleShot(True)
            self._tick.timeout.connect(self.driver.refresh)

        def start(self) -> None:
            self.driver.connected(self.bus.baseService())
            # Subscribe first, then read the state (nothing is missed in between).
            self.watcher = QtDBus.QDBusServiceWatcher(
                BUS_NAME, self.bus, QtDBus.QDBusServiceWatcher.WatchModeFlag.WatchForOwnerChange
            )
            self.watcher.serviceOwnerChanged.connect(self._owner_changed)
            # Every signal of the interface ("" member), from whoever owns the name.
            if not self.bus.connect(BUS_NAME, OBJECT_PATH, INTERFACE, "", self.on_signal):
                error = self.bus.lastError().message()
                raise RuntimeError(f"cannot subscribe to {INTERFACE}: {error}")
            token = self.driver.owner_lookup()

            def got_owner(error: str, _message: str, args: list[Any]) -> None:
                self.driver.owner_found(token, "" if error else str(args[0]))

            self._call(DBUS_NAME, DBUS_PATH, DBUS_INTERFACE, "GetNameOwner", [BUS_NAME], got_owner)

        def _owner_changed(self, name: str, _old: str, new: str) -> None:
            if name == BUS_NAME:
                self.driver.owner_changed(new)

        @qt.Slot(QtDBus.QDBusMessage)
        def on_signal(self, msg: Any) -> None:
            if msg.path() == OBJECT_PATH and msg.interface() == INTERFACE:
                self.driver.signal(msg.service(), msg.member(), list(msg.arguments()))

        def _call(
            self,
            destination: str,
            path: str,
            interface: str,
            member: str,
            args: list[Any],
            done: Callable[[str, str, list[Any]], None],
        ) -> None:
            msg = QtDBus.QDBusMessage.createMethodCall(destination, path, interface, member)
            msg.setArguments(args)
            watcher = QtDBus.QDBusPendingCallWatcher(self.bus.asyncCall(msg), self)
            self._watchers.add(watcher)

            def finished(w: Any) -> None:
                self._watchers.discard(w)
                error, message, out = qt.finished_call(w)
                w.deleteLater()
                done(error, message, out)

            watcher.finished.connect(finished)

        # -- the Port ---------------------------------------------------------------------
        # Calls go to the owner's unique name: if the service restarted meanwhile, the
        # bus answers that nobody has that name; a call never reaches the successor.

        def call_decide(self, call: CallDecide) -> None:
            def done(error: str, message: str, _args: list[Any]) -> None:
                self.driver.decide_replied(call, error, message)

            args = [call.request_id, call.decision, qt.uint64(call.delay_ms)]
            self._call(call.owner, OBJECT_PATH, INTERFACE, "Decide", args, done)

        def load_pending(self, owner: str) -> None:
            def done(error: str, message: str, args: list[Any]) -> None:
                requests = [] if error else [(str(r), str(k), dict(i)) for r, k, i in args[0]]
                self.driver.pending_replied(owner, error, message, requests)

            self._call(owner, OBJECT_PATH, INTERFACE, "GetPendingRequests", [], done)

        def render(self, view: View) -> None:
            self.window.render(view)

        def tick_in(self, seconds: float | None) -> None:
            self._tick.stop()
            if seconds is not None:
                self._tick.start(round(seconds * 1000))

    return BusLink


def _quit_on_signals(qt: qt_binding.Binding, app: Any) -> Any:
    """SIGTERM/SIGINT end the event loop (Python's handlers run only when Qt wakes it)."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    notifier = qt.QtCore.QSocketNotifier(reader.fileno(), qt.QtCore.QSocketNotifier.Type.Read)
    notifier.activated.connect(app.quit)
    return (reader, writer, notifier)  # kept alive by the caller


def main(argv: Sequence[str] | None = None) -> int:
    """``nhlink-kiosk-qt [--later-delay SECONDS] [--qt BINDING] [--verbose]``"""
    p = cli.parser(PROG, "Qt (QtDBus) prompt for nhlink-dbus update decisions")
    p.add_argument(
        "--qt",
        choices=qt_binding.BINDINGS,
        help=f"the Qt binding (default: ${qt_binding.ENV}, else the first of "
        f"{', '.join(qt_binding.BINDINGS)} that imports)",
    )
    args = p.parse_args(argv)
    cli.setup_logging(PROG, args.verbose)
    try:
        qt = qt_binding.load(args.qt)
    except ImportError as exc:
        logger.error("cannot start: %s", exc)
        return 2
    if not any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        # (Qt itself would abort the process)
        logger.error("cannot open the display: neither DISPLAY nor WAYLAND_DISPLAY is set")
        return 1
    app = qt.QtWidgets.QApplication([PROG])
    app.setApplicationName(PROG)
    if not os.environ.get("QT_STYLE_OVERRIDE"):
        app.setStyle("Fusion")  # the same look wherever it runs
    logger.info("Qt binding: %s (Qt %s)", qt.name, qt.qt_version)
    bus = qt.QtDBus.QDBusConnection.systemBus()
    if not bus.isConnected():
        logger.error("cannot use the system bus: %s", bus.lastError().message())
        return 1
    link_class = build(qt)
    link = link_class(Prompt(args.later_delay * 1000, cli.who_am_i()), bus)
    try:
        link.start()
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    keep = _quit_on_signals(qt, app)
    status = int(app.exec())
    del keep
    return status


if __name__ == "__main__":
    sys.exit(main())
