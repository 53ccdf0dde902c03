"""Typed hub messages of the ``"device"`` topic (protocol.md §3, §4.1, §5).

Parsers take a decoded JSON payload and return a frozen value or raise
:class:`ProtocolError`; no raw dict travels past them. Download URLs are
pre-signed credentials: they are kept out of ``repr`` so a logged value never
carries one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nhlink_dbus.core.records import dataclass, field
from nhlink_dbus.errors import ProtocolError

DEVICE_TOPIC = "device"
# 2.2.0 extensions, 2.3.0 firmware validation (nerves_hub_link configurator.ex at
# 388b391 sends "2.3.0"), 2.4.0 device-managed updates (nerves_hub_web
# docs/device_managed_updates.md): all implemented here (core/extensions.py,
# core/validation.py, core/update_mode.py).
DEVICE_API_VERSION = "2.4.0"
CONSOLE_VERSION = "2.0.0"
ON_CONNECT = "on_connect"

SCRIPTS_UNSUPPORTED_OUTPUT = (
    "scripts/run is not supported on this device: nhlink-dbus does not evaluate Elixir"
)

_METADATA_FIELDS = (
    "architecture",
    "author",
    "description",
    "fwup_version",
    "misc",
    "platform",
    "product",
    "uuid",
    "vcs_identifier",
    "version",
)


@dataclass(frozen=True, slots=True)
class FirmwareMetadata:
    """``firmware_meta`` of an update (all strings, any may be absent)."""

    architecture: str | None = None
    author: str | None = None
    description: str | None = None
    fwup_version: str | None = None
    misc: str | None = None
    platform: str | None = None
    product: str | None = None
    uuid: str | None = None
    vcs_identifier: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class UpdateInfo:
    """An ``update`` push (or a legacy join reply, or a check_update_available reply)."""

    firmware_url: str = field(repr=False)
    firmware_meta: FirmwareMetadata
    deployment_id: int | None = None
    # Newer servers (nerves_hub_web UpdatePayload): the file's size, its SHA-256 and
    # the SHA-256 of every 1 MiB part, upper-case hex (firmwares.ex).
    size: int | None = None
    checksum: str | None = None
    partials_checksums: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    """An ``archive`` push (§4.1): a signed ``.fw`` side payload for applications."""

    size: int
    uuid: str
    version: str
    url: str = field(repr=False)
    description: str | None = None
    platform: str | None = None
    architecture: str | None = None
    uploaded_at: str | None = None


@dataclass(frozen=True, slots=True)
class FwupPublicKeys:
    """``fwup_public_keys``: replaces the firmware signing keys (base64 Ed25519)."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ArchivePublicKeys:
    """``archive_public_keys``: replaces the archive signing keys."""

    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reboot:
    """``reboot``: the hub asks for a reboot (push ``rebooting`` first)."""


@dataclass(frozen=True, slots=True)
class Identify:
    """``identify``: the hub asks the device to make itself noticed."""


@dataclass(frozen=True, slots=True)
class ScriptRun:
    """``scripts/run``: Elixir source to evaluate; answered as unsupported."""

    text: str = field(repr=False)
    ref: str


ServerMessage = (
    UpdateInfo | ArchiveInfo | FwupPublicKeys | ArchivePublicKeys | Reboot | Identify | ScriptRun
)


def _opt_str(payload: Mapping[str, Any], key: str, where: str) -> str | None:
    value = payload.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ProtocolError(f"{where}: {key} must be a string or null")


def _req_str(payload: Mapping[str, Any], key: str, where: str) -> str:
    value = payload.get(key)
    if isinstance(value, str):
        return value
    raise ProtocolError(f"{where}: {key} must be a string")


def parse_firmware_metadata(payload: Any) -> FirmwareMetadata:
    """``firmware_meta``: an object of optional strings; unknown keys are ignored."""
    if not isinstance(payload, dict):
        raise ProtocolError("firmware_meta must be an object")
    values = {name: _opt_str(payload, name, "firmware_meta") for name in _METADATA_FIELDS}
    return FirmwareMetadata(**values)


def parse_update(payload: Any) -> UpdateInfo:
    """UpdatePayload → UpdateInfo.

    As ``UpdateInfo.parse/1`` it needs a ``firmware_meta`` object and a
    ``firmware_url``; ``update_available`` is not examined. The URL must be a
    string (2.5.2 would crash on anything else). A non-integer ``deployment_id``
    is informational only and becomes None.
    """
    if not isinstance(payload, dict):
        raise ProtocolError("update payload must be an object")
    url = payload.get("firmware_url")
    if not isinstance(url, str) or not url:
        raise ProtocolError("update: firmware_url must be a non-empty string")
    meta = parse_firmware_metadata(payload.get("firmware_meta"))
    deployment = payload.get("deployment_id")
    if isinstance(deployment, bool) or not isinstance(deployment, int):
        deployment = None
    size = payload.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise ProtocolError("update: size must be a non-negative integer")
    checksum = payload.get("checksum")
    if checksum is not None and not _is_sha256_hex(checksum):
        raise ProtocolError("update: checksum must be a hex SHA-256")
    partials = payload.get("partials_checksums") or []
    if not isinstance(partials, list) or not all(_is_sha256_hex(p) for p in partials):
        raise ProtocolError("update: partials_checksums must be a list of hex SHA-256")
    return UpdateInfo(
        firmware_url=url,
        firmware_meta=meta,
        deployment_id=deployment,
        size=size,
        checksum=checksum,
        partials_checksums=tuple(partials),
    )


def _is_sha256_hex(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 64:
        return False
    return all(c in "0123456789abcdefABCDEF" for c in value)


def parse_update_check(response: Any) -> UpdateInfo | None:
    """The reply to ``check_update_available`` (§5.2): an update, or None when none is offered."""
    if isinstance(response, dict) and (
        response.get("update_available") is False or response.get("firmware_url") is None
    ):
        return None
    return parse_update(response)


def parse_archive(payload: Any) -> ArchiveInfo:
    """An ``archive`` push: ``size`` an integer >= 0; ``uuid``, ``version``, ``url`` strings."""
    if not isinstance(payload, dict):
        raise ProtocolError("archive payload must be an object")
    size = payload.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError("archive: size must be a non-negative integer")
    return ArchiveInfo(
        size=size,
        uuid=_req_str(payload, "uuid", "archive"),
        version=_req_str(payload, "version", "archive"),
        url=_req_str(payload, "url", "archive"),
        description=_opt_str(payload, "description", "archive"),
        platform=_opt_str(payload, "platform", "archive"),
        architecture=_opt_str(payload, "architecture", "archive"),
        uploaded_at=_opt_str(payload, "uploaded_at", "archive"),
    )


def parse_keys(payload: Any, event: str) -> tuple[str, ...]:
    """``{"keys": [string, …]}``."""
    keys = payload.get("keys") if isinstance(payload, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ProtocolError(f"{event}: keys must be a list of strings")
    return tuple(keys)


def parse_script_run(payload: Any) -> ScriptRun:
    """``{"text": string, "ref": string}``."""
    if not isinstance(payload, dict):
        raise ProtocolError("scripts/run payload must be an object")
    return ScriptRun(
        text=_req_str(payload, "text", "scripts/run"), ref=_req_str(payload, "ref", "scripts/run")
    )


def parse_server_message(event: str, payload: Any) -> ServerMessage | None:
    """A ``"device"`` push as a typed value; None for events we tolerate but ignore.

    Raises :class:`ProtocolError` when a known event's payload is malformed.
    """
    match event:
        case "update":
            return parse_update(payload)
        case "archive":
            return parse_archive(payload)
        case "fwup_public_keys":
            return FwupPublicKeys(parse_keys(payload, event))
        case "archive_public_keys":
            return ArchivePublicKeys(parse_keys(payload, event))
        case "reboot":
            return Reboot()
        case "identify":
            return Identify()
        case "scripts/run":
            return parse_script_run(payload)
        case _:
            # check_health (2.5.2 does not handle it), extensions:get (≥ 2.2.0 servers
            # only) and whatever else the server relays from its PubSub topic.
            return None


def script_run_reply(run: ScriptRun) -> dict[str, str]:
    """The ``scripts/run`` answer (§5.1 shape): we do not evaluate Elixir, and say so.

    protocol.md §14 recommends treating Elixir source as unsupported while keeping
    the reply shape; ``return`` is ``"nil"`` as 2.5.2 answers a failed evaluation.
    """
    return {"ref": run.ref, "output": SCRIPTS_UNSUPPORTED_OUTPUT, "return": "nil"}


def fwup_progress(value: int) -> dict[str, int]:
    """``fwup_progress`` payload: an integer percentage 0..100."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"progress must be an integer 0..100, got {value!r}")
    return {"value": value}


def status_update(status: str) -> dict[str, str]:
    """``status_update`` payload, e.g. ``"fwup error <message>"``."""
    return {"status": status}


def device_join_params(
    kv: Mapping[str, str],
    fwup_version: str,
    *,
    fwup_keys_configured: bool,
    archive_keys_configured: bool,
    currently_downloading_uuid: str | None,
    meta: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """The ``"device"`` join payload of §3.1.

    ``kv`` holds the running slot's firmware KV entries with the slot prefix
    already removed. Our own keys are written after them, so a KV entry can never
    shadow ``fwup_version`` or ``device_api_version`` (2.5.2 merges the same way).

    A key list is requested with ``"on_connect"`` when none of that kind is
    configured. (2.5.2 asks for archive keys only when neither archive nor
    firmware keys are configured; asking per kind costs nothing and spares an
    archive manager that has no keys of its own.)

    ``currently_downloading_uuid`` is sent on every join, re-joins included
    (2.5.2 drops it on re-joins; protocol.md §14 recommends always sending it).
    ``console_version`` is sent as 2.5.2 does; without a ``"console"`` join the
    server never uses it. ``meta`` is the firmware validation state
    (``core/validation.join_meta``), sent on every join as 2.8.1+ does.
    """
    params: dict[str, Any] = dict(kv)
    params["fwup_version"] = fwup_version
    params["device_api_version"] = DEVICE_API_VERSION
    params["console_version"] = CONSOLE_VERSION
    if not fwup_keys_configured:
        params["fwup_public_keys"] = ON_CONNECT
    if not archive_keys_configured:
        params["archive_public_keys"] = ON_CONNECT
    params["currently_downloading_uuid"] = currently_downloading_uuid
    if meta is not None:
        params["meta"] = dict(meta)
    return params
