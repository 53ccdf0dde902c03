"""The Qt binding the Qt prompt runs on, and every difference between them.

PyQt5 is Debian 12's (``python3-pyqt5``: Qt 5.15 with QtDBus) and the default;
PyQt6 (Qt 6, from PyPI) works too. ``nhlink_kiosk.qt`` writes enums scoped
(``Qt.TextFormat.PlainText``), which both accept, and reaches what differs
through :class:`Binding`.

PySide6 is not supported: its QtDBus hands ``a{sv}`` and ``a(ssa{sv})`` values
to Python as ``QDBusArgument`` objects that cannot be read from Python (their
``beginStructure`` takes the writing overload), and it cannot send a ``uint64``
(``Decide``'s ``t delay_ms`` goes out as ``i`` and is refused). PyQt turns
both into plain Python values.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

BINDINGS = ("PyQt5", "PyQt6")
ENV = "NHLINK_KIOSK_QT"  # the binding to use; default: the first that imports
_MODULES = ("QtCore", "QtGui", "QtWidgets", "QtDBus")


@dataclass(frozen=True)
class Binding:
    name: str
    QtCore: Any
    QtGui: Any
    QtWidgets: Any
    QtDBus: Any

    @property
    def qt_version(self) -> str:
        return str(self.QtCore.qVersion())

    @property
    def Slot(self) -> Any:
        return self.QtCore.pyqtSlot

    def uint64(self, value: int) -> Any:
        """``value`` as a D-Bus ``t`` argument (PyQt6's type ids are enum members)."""
        type_id = self.QtCore.QMetaType.Type.ULongLong
        return self.QtDBus.QDBusArgument(value, getattr(type_id, "value", type_id))

    def finished_call(self, watcher: Any) -> tuple[str, str, list[Any]]:
        """(error name, error message, reply arguments) of a finished asynchronous call;
        the error name is "" when it worked."""
        reply = self.QtDBus.QDBusPendingReply(watcher).reply()
        if reply.type() == self.QtDBus.QDBusMessage.MessageType.ErrorMessage:
            return str(reply.errorName()), str(reply.errorMessage()), []
        return "", "", list(reply.arguments())


def load(preferred: str | None = None) -> Binding:
    """The binding named by ``preferred`` (or ``$NHLINK_KIOSK_QT``), else the first that
    imports with QtDBus; :class:`ImportError` naming each problem if none does."""
    wanted = preferred or os.environ.get(ENV) or ""
    if wanted and wanted not in BINDINGS:
        raise ImportError(f"unknown Qt binding {wanted!r} (one of {', '.join(BINDINGS)})")
    problems: list[str] = []
    for name in [wanted] if wanted else BINDINGS:
        try:
            modules = [importlib.import_module(f"{name}.{module}") for module in _MODULES]
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
            continue
        return Binding(name, *modules)
    raise ImportError("no usable Qt binding with QtDBus: " + "; ".join(problems))
