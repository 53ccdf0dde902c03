"""Plain service values ↔ D-Bus values, and the scrubbing of URLs on the way out.

Info dictionaries (DESIGN §2) are ``a{sv}``. Their values get one D-Bus type per
Python type, so a client always sees the same type for a key whatever the value:

* ``str`` → ``s``
* ``bool`` → ``b``
* ``int`` → ``x`` (int64: sizes, deployment ids; signed so no value changes type)

Nothing that looks like a URL crosses the bus: a firmware URL is a pre-signed
credential and signals reach every process on the bus. Keys named ``url`` or
``*_url`` and string values that start with a URL scheme are dropped; free text
(error messages) has the query, fragment and user info cut out of any URL in it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dbus_next.signature import Variant

logger = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1

# RFC 3986 §3.1 scheme, then "://": what a value must not start with.
_URL_START = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


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
            if _URL_START.match(value):
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


def scrub_text(text: str) -> str:
    """``text`` with every URL in it reduced to scheme, host, port and path."""
    return _URL_IN_TEXT.sub(lambda m: safe_url(m.group(0)), text)


def safe_url(url: str) -> str:
    """``url`` without user info, query and fragment (where credentials live)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def unwrap(value: Any) -> Any:
    """A D-Bus value with every ``Variant`` replaced by its plain value (recursively)."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value
