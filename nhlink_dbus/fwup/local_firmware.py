"""Local firmware files handed to the service as open descriptors (``InstallFile``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Sequence

from nhlink_dbus.core.fwup_meta import META_FIELDS, ArchiveInspector, meta_uuid
from nhlink_dbus.errors import NhlinkError
from nhlink_dbus.fwup.signature import check_signature, parse_public_key

CHUNK = 1 << 20


class LocalFirmwareError(NhlinkError):
    """The file is not a valid, signed firmware archive; the message says why."""


def inspect_fd(fd: int, public_keys: Sequence[str]) -> dict[str, str]:
    """Verify the whole archive behind ``fd`` (signature and every resource).

    Reads with ``pread`` from offset 0, so the descriptor's position does not
    matter. Returns FirmwareMetadata fields (``uuid``, ``version``, ...).
    """
    keys = [parse_public_key(k) for k in public_keys]
    inspector = ArchiveInspector(keys, check_signature, verify=True)
    offset = 0
    try:
        while not inspector.complete:
            data = os.pread(fd, CHUNK, offset)
            if not data:
                inspector.finish()
                break
            offset += len(data)
            for start in range(0, len(data), 16384):
                inspector.feed(data[start : start + 16384])
    except OSError as exc:
        raise LocalFirmwareError(f"cannot read the file: {exc.strerror}") from exc
    except NhlinkError as exc:
        raise LocalFirmwareError(str(exc)) from exc
    info = inspector.info
    assert info is not None
    out = {
        field: info.conf.meta[key] for key, field in META_FIELDS.items() if key in info.conf.meta
    }
    out["uuid"] = meta_uuid(info.meta_conf)
    return out


async def read_fd_chunks(fd: int, chunk: int = CHUNK) -> AsyncGenerator[bytes, None]:
    """The whole file behind ``fd`` from offset 0, read off the event loop."""
    offset = 0
    while True:
        data = await asyncio.to_thread(os.pread, fd, chunk, offset)
        if not data:
            return
        offset += len(data)
        yield data
