"""Reading and writing the firmware KV store on a device, image or file (I/O side of
core.kv_format)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping

from nhlink_dbus.core import uboot_env
from nhlink_dbus.core.kv_format import (
    KVError,
    kv_spec_redundant_offset,
    parse_env_file,
    parse_kv_spec,
    parse_uboot_block,
    parse_uboot_redundant,
)
from nhlink_dbus.errors import NhlinkError


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


def update_kv(spec: str, changes: Mapping[str, str]) -> dict[str, str]:
    """Set ``changes`` in the store named by ``spec``; returns the whole store afterwards.

    A U-Boot environment is changed as fwup's ``uboot_setenv`` changes it (the
    first entry of a name replaced, or a new one added) and written back whole;
    a redundant one into the copy that was *not* read, with its flags byte one
    higher, so that a power cut leaves the old copy valid. A ``file:`` store is
    rewritten through a temporary file and a rename. Both are synced. Raises
    :class:`KVError` when the store cannot be read or written, or the values do
    not fit.
    """
    for key, value in changes.items():
        if not key or "=" in key or "\0" in key or "\0" in value or "\n" in key + value:
            raise KVError(f"cannot store {key!r}={value!r} in the KV store")
    kind, path, offset, size = parse_kv_spec(spec)
    try:
        if kind == "file":
            _update_env_file(path, changes)
        else:
            _update_uboot_env(path, offset, kv_spec_redundant_offset(spec), size, changes)
    except OSError as exc:
        raise KVError(f"{path}: {exc}") from exc
    return read_kv(spec)


def _update_env_file(path: str, changes: Mapping[str, str]) -> None:
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    parse_env_file("\n".join(lines))  # refuse to rewrite a file we cannot read
    todo = dict(changes)
    out: list[str] = []
    for line in lines:
        key = line.partition("=")[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in todo:
            out.append(f"{key}={todo.pop(key)}")
        else:
            out.append(line)
    out += [f"{key}={value}" for key, value in todo.items()]
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".kv-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(out) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _update_uboot_env(
    path: str, offset: int, redund: int | None, size: int, changes: Mapping[str, str]
) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        primary = os.pread(fd, size, offset)
        secondary = os.pread(fd, size, redund) if redund is not None else b""
        if len(primary) != size or (redund is not None and len(secondary) != size):
            raise KVError(f"{path}: short read of the U-Boot environment")
        try:
            if redund is None:
                pairs = uboot_env.decode_pairs(primary, errors="surrogateescape")
                targets, flags = [offset], None
            else:
                state = uboot_env.read_redundant(primary, secondary, errors="surrogateescape")
                pairs, flags = state.pairs, (state.flags + 1) & 0xFF
                targets = [offset] if state.write_primary else []
                targets += [redund] if state.write_secondary else []
            for key, value in changes.items():
                uboot_env.setenv(pairs, key, value)
            block = uboot_env.encode(pairs, size, flags=flags)
        except (uboot_env.UbootEnvError, NhlinkError) as exc:
            raise KVError(f"{path}: {exc}") from None
        for at in targets:
            if os.pwrite(fd, block, at) != size:
                raise KVError(f"{path}: short write of the U-Boot environment")
        os.fsync(fd)
    finally:
        os.close(fd)
