"""The project's one exception tree.

::

    NhlinkError                     base of everything we raise on purpose
    ├── RemoteError                 the peer's fault: bad input from outside
    │   ├── ProtocolError           a malformed Phoenix frame or hub message
    │   ├── AuthError               the hub refused our credentials (HTTP 401/403)
    │   ├── HubConnectionError      the hub could not be reached, the TLS handshake
    │   │                           or the WebSocket upgrade failed, or it dropped
    │   ├── DownloadError           HTTP status, truncated body, retries exhausted
    │   └── FirmwareError           a .fw archive that is malformed, unsigned,
    │                               wrongly signed, corrupt or not applicable;
    │                               its message is the text fwup would print
    └── LocalError                  our own misuse or the local system's fault
        ├── ConfigError             a bad configuration file or value
        ├── StateError              an illegal state-machine transition
        ├── TargetError             the target device cannot be read or written
        ├── LogindError             logind refused or did not answer (no fallback worked)
        ├── BusNameError            the bus name cannot be owned (policy, or taken)
        ├── JournalError            the update journal cannot be read or written
        └── RequestError            a caller's request to the service is refused
            ├── UnknownRequest      no pending request has that id (or it was decided)
            ├── InvalidDecision     the decision does not fit the request's kind
            ├── InvalidArgument     a bad argument (e.g. a delay without reschedule)
            ├── AccessDenied        the caller may not call methods
            └── NotPossible         the request cannot be honoured in this state

Each RequestError subclass maps to ``org.nerveshub.Link1.Error.<ClassName>`` on
the bus.

Third-party exceptions are translated once, at the adapter that calls the
library (``raise ... from exc``); nothing else escapes an adapter.
"""

from __future__ import annotations


class NhlinkError(Exception):
    """Base class of every error this project raises on purpose."""


class RemoteError(NhlinkError):
    """The peer (hub, download server, archive author) sent something wrong."""


class ProtocolError(RemoteError):
    """A malformed Phoenix frame or hub message."""


class AuthError(RemoteError):
    """The hub refused the device's credentials.

    ``server_time`` is the hub's clock (Unix seconds) from the refusal's ``Date``
    header, when it had one.
    """

    def __init__(self, message: str, server_time: float | None = None) -> None:
        super().__init__(message)
        self.server_time = server_time


class HubConnectionError(RemoteError):
    """The hub connection could not be opened, or it ended (not an auth refusal)."""


class DownloadError(RemoteError):
    """A firmware or archive download failed for good."""


class FirmwareError(RemoteError):
    """A firmware archive that cannot be verified or applied.

    ``str(err)`` is the message fwup would report (the text of its ``ER`` packet).
    """


class LocalError(NhlinkError):
    """Our own misuse, or a fault of the local system."""


class ConfigError(LocalError):
    """A bad configuration file or value; the message names the file and key."""


class StateError(LocalError):
    """An illegal transition of a state machine; the state is left unchanged."""


class TargetError(LocalError):
    """The target device or image cannot be opened, read or written."""


class LogindError(LocalError):
    """logind refused or did not answer, and no fallback worked."""


class BusNameError(LocalError):
    """The bus name cannot be had: not permitted by the policy, or owned already."""


class JournalError(LocalError):
    """The update journal (``core/recovery.py``) cannot be read, parsed or written."""


class RequestError(LocalError):
    """A caller's request is refused; the bus maps it to ``Link1.Error.<ClassName>``."""


class UnknownRequest(RequestError):
    """No pending request has that id, or it was already decided."""


class InvalidDecision(RequestError):
    """The decision is not valid for the request's kind."""


class InvalidArgument(RequestError):
    """A malformed argument."""


class AccessDenied(RequestError):
    """The caller is neither root nor in the configured group."""


class NotPossible(RequestError):
    """The request cannot be honoured in the current state."""
