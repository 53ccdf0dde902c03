"""Plain service values ↔ D-Bus values, without URLs on the way out.

Info dictionaries (DESIGN §2) are ``a{sv}``. Their values get one D-Bus type per
Python type, so a client always sees the same type for a key whatever the value:

* ``str`` → ``s``
* ``bool`` → ``b``
* ``int`` → ``x`` (int64: sizes, deployment ids; signed so no value changes type)

Nothing that looks like a URL crosses the bus: a firmware URL is a pre-signed
credential and signals reach every process on the bus. Keys named ``url`` or
``*_url`` and string values that start with a URL scheme are dropped; free text
(error messages) goes through :func:`nhlink_dbus.core.redact.redact_text` in
``bus/interface.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dbus_next.signature import Variant

from nhlink_dbus.core.redact import starts_with_url

logger = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1


def _is_url_key(key: str) -> bool:
    lowered = key.lower()
    return lowered == "url" or lowered.endswith(("_url", "-url"))


def info_to_variants(info: Mapping[str, object]) -> dict[str, Variant]:
    """An info mapping as ``a{sv}``, without URLs and without values of unknown type."""
    out: dict[str, Variant] = {}
    for key, value in info.items():
        if _is_url_key(key):
            logger.warning("dropped key %r from an info dictionary: URLs never cross the bus", key)
            continue
        if isinstance(value, str):
            if starts_with_url(value):
                logger.warning("dropped %r from an info dictionary: its value is a URL", key)
                continue
            out[key] = Variant("s", value)
        elif isinstance(value, bool):
            out[key] = Variant("b", value)
        elif isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
            out[key] = Variant("x", value)
        else:
            logger.warning("dropped %r from an info dictionary: %s", key, type(value).__name__)
    return out


def unwrap(value: Any) -> Any:
    """A D-Bus value with every ``Variant`` replaced by its plain value (recursively)."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value
