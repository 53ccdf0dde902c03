"""Reading the firmware KV store from a device, image or file (I/O side of core.kv)."""

from __future__ import annotations

import os

from nhlink_dbus.core.kv_format import (
    KVError,
    kv_spec_redundant_offset,
    parse_env_file,
    parse_kv_spec,
    parse_uboot_block,
    parse_uboot_redundant,
)


def read_kv(spec: str) -> dict[str, str]:
    """The whole store named by ``spec`` (see :func:`nhlink_dbus.core.kv_format.parse_kv_spec`).

    Raises :class:`KVError` when it cannot be read or is not valid.
    """
    kind, path, offset, size = parse_kv_spec(spec)
    redund = kv_spec_redundant_offset(spec)
    offsets = [offset] if redund is None else [offset, redund]
    blocks: list[bytes] = []
    try:
        if kind == "file":
            with open(path, encoding="utf-8") as fh:
                return parse_env_file(fh.read())
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            blocks = [os.pread(fd, size, at) for at in offsets]
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError) as exc:
        raise KVError(f"{path}: {exc}") from exc
    for at, block in zip(offsets, blocks, strict=True):
        if len(block) != size:
            raise KVError(f"{path}: short read of the U-Boot environment at {at:#x}")
    if redund is None:
        return parse_uboot_block(blocks[0])
    return parse_uboot_redundant(blocks[0], blocks[1])
