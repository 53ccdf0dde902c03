"""URLs and free text fit for a log line or a D-Bus signal (STYLE.md 6).

Firmware and archive URLs are pre-signed: the query string is the credential,
and user info (``user:password@``) is one too. Whatever leaves the process — a
log record, a signal, a property — goes through one of these functions first.

Rules::

    redact_url(url)   scheme://host[:port]/path   user info, query, fragment cut
                      "<url>"                     host or port unparseable
    redact_text(text) every "scheme://" URL in text redacted as above, the rest kept

* The query and the fragment are cut at the first ``?`` or ``#`` *before*
  anything is parsed, so they go even when the rest cannot be parsed. Nothing
  marks that there was one (the bus shows ``ServerUrl`` without it).
* Any scheme counts (RFC 3986 §3.1: a letter, then letters, digits, ``+ - .``),
  not only http(s) and ws(s).
* A URL in text runs to the next blank, ``"``, ``<`` or ``>``: those are never
  part of a URL (RFC 3986 §2, Appendix C), and ``"`` ends one in JSON. A ``'``
  is legal inside a URL (a sub-delim), so a URL quoted with ``'`` loses its
  closing quote with its query rather than let a query holding ``'`` through.
* A ``scheme://`` inside the part before the query (``https://a/x/https://u:p@b``)
  starts a URL of its own, so embedded user info is cut too.
* A URL without a scheme (``hub.example.com:4001``, a relative ``/path``) is
  read as authority and path.
* Idempotent, and never raises: the result of either function is its own
  redaction.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

PLACEHOLDER: Final = "<url>"

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_URL_START: Final = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
_TOKEN: Final = re.compile(r"""[^\s"<>]+""")
_QUERY_OR_FRAGMENT: Final = re.compile(r"[?#]")


def starts_with_url(text: str) -> bool:
    """Whether ``text`` starts (after blanks) with ``scheme://``."""
    return _URL_START.match(text) is not None


def redact_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]/path``: no user info, query or fragment."""
    base = _QUERY_OR_FRAGMENT.split(url, maxsplit=1)[0]
    starts = [m.start() for m in _SCHEME.finditer(base) if m.start() > 0]
    bounds = zip([0, *starts], [*starts, len(base)], strict=True)
    return "".join(_redact_one(base[begin:end]) for begin, end in bounds)


def redact_text(text: str) -> str:
    """``text`` with every URL in it (any scheme) passed through :func:`redact_url`."""
    return _TOKEN.sub(_redact_token, text)


def _redact_token(match: re.Match[str]) -> str:
    token = match.group(0)
    url = _SCHEME.search(token)
    if url is None:
        return token
    return token[: url.start()] + redact_url(token[url.start() :])


def _redact_one(piece: str) -> str:
    """One URL without query or fragment, and with no ``scheme://`` after its start."""
    has_scheme = _SCHEME.match(piece) is not None
    try:
        parts = urlsplit(piece if has_scheme else "//" + piece)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # bad brackets, bad port, a netloc that NFKC-normalizes badly
        return PLACEHOLDER
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    # Built by hand: urlunsplit drops "//" before an empty host, which would
    # change how the result reads a second time.
    prefix = f"{parts.scheme}://" if has_scheme else ""
    return f"{prefix}{netloc}{parts.path}"
