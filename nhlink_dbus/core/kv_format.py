"""The running firmware's key/value store, as Nerves.Runtime.KV reads it.

Two sources (DESIGN §4): the U-Boot environment block fwup's ``uboot_setenv``
writes (see :mod:`.uboot_env`; a redundant one has two copies and the newer
valid one is read), and a plain file with one ``key=value`` per
line, as ``fw_printenv`` prints them. :func:`active_slot_metadata` gives what the
device reports when it joins the hub (protocol.md §3.1): the active slot's
``<slot>.nerves_fw_*`` entries with the prefix removed.
"""

from __future__ import annotations

from collections.abc import Mapping

from nhlink_dbus.core import uboot_env
from nhlink_dbus.errors import ConfigError


class KVError(ValueError):
    """The store cannot be read or does not hold a valid environment."""


def parse_env_file(text: str) -> dict[str, str]:
    """``key=value`` lines; blank lines and ``#`` comments are skipped."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise KVError(f"line {number}: expecting key=value")
        out[key.strip()] = value
    return out


def parse_uboot_block(block: bytes) -> dict[str, str]:
    try:
        return uboot_env.decode(block)
    except uboot_env.UbootEnvError as exc:
        raise KVError(str(exc)) from None


def parse_uboot_redundant(primary: bytes, secondary: bytes) -> dict[str, str]:
    """A redundant U-Boot environment (both copies): the newer valid copy's
    variables, as fwup and U-Boot read them."""
    try:
        return uboot_env.read_redundant(primary, secondary).values
    except uboot_env.UbootEnvError as exc:
        raise KVError(str(exc)) from None


def active_slot_metadata(kv: Mapping[str, str]) -> dict[str, str]:
    """The active slot's entries without the ``<slot>.`` prefix.

    With no ``nerves_fw_active`` (a single-slot system), un-prefixed
    ``nerves_fw_*`` entries are the running firmware's own.
    """
    slot = kv.get("nerves_fw_active")
    if not slot:
        return {k: v for k, v in kv.items() if k.startswith("nerves_fw_") and k not in _GLOBAL}
    prefix = f"{slot}."
    return {k[len(prefix) :]: v for k, v in kv.items() if k.startswith(prefix)}


# Global keys never reported as slot metadata (protocol.md §3.1).
_GLOBAL = frozenset({"nerves_fw_active", "nerves_fw_devpath", "nerves_fw_validated"})


def parse_kv_spec(spec: str) -> tuple[str, str, int, int]:
    """``uboot-env:PATH:OFFSET:SIZE`` or ``file:PATH`` → (kind, path, offset, size).

    A redundant U-Boot environment is ``uboot-env:PATH:OFFSET,OFFSET2:SIZE``
    (the second copy at byte ``OFFSET2``, see :func:`kv_spec_redundant_offset`);
    ``offset`` is then the primary copy's.
    """
    kind, path, offset, _redund, size = _parse_kv_spec(spec)
    return kind, path, offset, size


def kv_spec_redundant_offset(spec: str) -> int | None:
    """The byte offset of a redundant U-Boot environment's second copy, or None."""
    return _parse_kv_spec(spec)[3]


def _parse_kv_spec(spec: str) -> tuple[str, str, int, int | None, int]:
    kind, sep, rest = spec.partition(":")
    if kind == "file" and sep and rest:
        return "file", rest, 0, None, 0
    if kind == "uboot-env" and sep:
        parts = rest.rsplit(":", 2)
        if len(parts) == 3 and parts[0]:
            offsets = parts[1].split(",")
            try:
                size = int(parts[2], 0)
                numbers = [int(o, 0) for o in offsets]
            except ValueError:
                raise ConfigError(f"bad number in KV spec '{spec}'") from None
            if len(numbers) > 2 or min(numbers) < 0 or size < 8:
                raise ConfigError(f"bad offset or size in KV spec '{spec}'")
            redund = numbers[1] if len(numbers) == 2 else None
            if redund is not None and abs(redund - numbers[0]) < size:
                raise ConfigError(f"the two U-Boot environment copies overlap in KV spec '{spec}'")
            return "uboot-env", parts[0], numbers[0], redund, size
    raise ConfigError(
        f"KV spec '{spec}': expecting 'uboot-env:DEVICE:OFFSET[,OFFSET2]:SIZE' or 'file:PATH'"
    )
