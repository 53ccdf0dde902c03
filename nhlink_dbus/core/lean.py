"""The few names of :mod:`typing` that nhlink-fwup's modules use at run time, without
importing :mod:`typing`.

Importing ``typing`` loads ``re`` and ``enum`` with it: about 5 ms of the 30 ms it takes
``nhlink-fwup`` to start (the real fwup starts in 4 ms), on every firmware apply. The
type checker sees the real names; the modules do this::

    TYPE_CHECKING = False  # what mypy reads as typing.TYPE_CHECKING
    if TYPE_CHECKING:
        from typing import Protocol, cast
    else:
        from nhlink_dbus.core.lean import Protocol, cast

``tests/fwup/test_lean_start.py`` checks which modules the program's start loads.
"""

from __future__ import annotations

__all__ = ["Protocol", "cast", "dataclass_transform", "overload"]

# A protocol class is then a plain class at run time: nothing checks it there (no
# isinstance on protocols here), and its methods' bodies are never called.
Protocol = object


def cast(_type: object, value: object) -> object:
    """typing.cast: the value, unchanged."""
    return value


def overload(function: object) -> object:
    """typing.overload at run time: the last definition is the one that stays."""
    return function


def dataclass_transform(**_hints: object) -> object:
    """typing.dataclass_transform: only the type checker reads it."""
    return lambda function: function
