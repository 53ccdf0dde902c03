"""Integer settings whose default and range are written once, on the field.

A settings dataclass declares such a field as ``name: int = bounded(default,
minimum, maximum)``. Whoever needs the default or the range reads it from the
field: the dataclass itself (:func:`check_bounds` in ``__post_init__``) and the
configuration reader (``nhlink_dbus/config.py``), so a constructor and a file
refuse the same values with the same words::

    download.max_redirects: must be between 0 and 100 (got 101)
"""

from __future__ import annotations

from typing import Any, Final

from nhlink_dbus.core import records
from nhlink_dbus.core.records import dataclass
from nhlink_dbus.errors import ConfigError

# Upper bound of every duration (ms): ten years. Larger values are typos.
MAX_MS: Final = 10 * 365 * 86_400_000

_METADATA_KEY: Final = "nhlink_bounds"


@dataclass(frozen=True, slots=True)
class Bounds:
    """The closed range ``minimum..maximum`` of an integer setting."""

    minimum: int
    maximum: int = MAX_MS

    def problem(self, value: object) -> str | None:
        """What is wrong with ``value`` (one phrase), or None when it is in range."""
        # bool is an int subclass: true must not pass for 1.
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer (got {value!r})"
        if not self.minimum <= value <= self.maximum:
            return f"must be between {self.minimum} and {self.maximum} (got {int_text(value)})"
        return None


def bounded(default: int, minimum: int, maximum: int = MAX_MS) -> Any:
    """A dataclass field holding an integer: its default and its :class:`Bounds`."""
    return records.field(default=default, metadata={_METADATA_KEY: Bounds(minimum, maximum)})


def bounds_of(cls: type, name: str) -> Bounds:
    """The :class:`Bounds` of field ``name`` of dataclass ``cls`` (KeyError if none)."""
    bounds = field_of(cls, name).metadata.get(_METADATA_KEY)
    if not isinstance(bounds, Bounds):
        raise KeyError(f"{cls.__name__}.{name} is not a bounded field")
    return bounds


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (KeyError if it has none)."""
    found = field_of(cls, name)
    if found.default is not records.MISSING:
        return found.default
    if found.default_factory is not records.MISSING:
        return found.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def field_of(cls: type, name: str) -> records.Field:
    """Field ``name`` of dataclass ``cls`` (KeyError if there is none)."""
    for found in records.fields(cls):
        if found.name == name:
            return found
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def bounded_fields(cls: type) -> tuple[str, ...]:
    """The names of the bounded fields of dataclass ``cls``, in declaration order."""
    return tuple(f.name for f in records.fields(cls) if _METADATA_KEY in f.metadata)


def check_bounds(settings: object, table: str) -> None:
    """Raise ``ConfigError("TABLE.FIELD: problem")`` for the first field out of range."""
    for name in bounded_fields(type(settings)):
        problem = bounds_of(type(settings), name).problem(getattr(settings, name))
        if problem is not None:
            raise ConfigError(f"{table}.{name}: {problem}")


def int_text(value: int) -> str:
    """``str(value)``, or "a huge number" past the PEP 651 digit limit (TOML hex allows it)."""
    return str(value) if value.bit_length() <= 128 else "a huge number"


def same_as(cls: type, name: str) -> Any:
    """A bounded field with the default and the range of field ``name`` of ``cls``."""
    bounds = bounds_of(cls, name)
    return bounded(default_of(cls, name), bounds.minimum, bounds.maximum)
