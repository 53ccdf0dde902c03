"""Reading the firmware KV store from a device, image or file (I/O side of core.kv)."""

from __future__ import annotations

import os

from nhlink_dbus.core.kv_format import KVError, parse_env_file, parse_kv_spec, parse_uboot_block


def read_kv(spec: str) -> dict[str, str]:
    """The whole store named by ``spec`` (see :func:`nhlink_dbus.core.kv_format.parse_kv_spec`).

    Raises :class:`KVError` when it cannot be read or is not valid.
    """
    kind, path, offset, size = parse_kv_spec(spec)
    try:
        if kind == "file":
            with open(path, encoding="utf-8") as fh:
                return parse_env_file(fh.read())
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            block = os.pread(fd, size, offset)
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError) as exc:
        raise KVError(f"{path}: {exc}") from exc
    if len(block) != size:
        raise KVError(f"{path}: short read of the U-Boot environment at {offset:#x}")
    return parse_uboot_block(block)
