"""Build signed ``.fw`` archives (what ``fwup -c`` then ``fwup -S`` produce).

Used by the tests, the benchmarks, ``nhlink-hub-sim``'s demo firmware and
``make demo``; devices never need it. The layout follows fwup's: the
signature entry (stored, 64 bytes) first, then ``meta.conf`` (deflated), then
``data/<resource>`` in the order of the ``file-resource`` blocks.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from nhlink_dbus.core.fwup_meta import quote_value

CHUNK = 1 << 20


def load_private_key(text: str) -> Ed25519PrivateKey:
    """A fwup private key file: base64 of the 32-byte seed and the 32-byte public key."""
    raw = base64.b64decode(text.strip())
    if len(raw) != 64:
        raise ValueError("a fwup private key is 64 bytes (seed + public key)")
    return Ed25519PrivateKey.from_private_bytes(raw[:32])


def generate_key_pair() -> tuple[str, str]:
    """(private, public) in fwup's base64 key-file format, like ``fwup -g``."""
    key = Ed25519PrivateKey.generate()
    # private_bytes_raw()/public_bytes_raw() are cryptography >= 40; Debian 12 has 38.
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(seed + public).decode(), base64.b64encode(public).decode()


def _digest(source: Path | bytes) -> tuple[int, str]:
    h = hashlib.blake2b(digest_size=32)
    if isinstance(source, bytes):
        h.update(source)
        return len(source), h.hexdigest()
    size = 0
    with source.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def meta_conf_text(
    meta: Mapping[str, str], resources: Mapping[str, Path | bytes], body: str
) -> str:
    """``meta.conf`` as fwup writes it: meta keys, file-resource blocks, then ``body``."""
    lines = [f"{k}={quote_value(v)}" for k, v in meta.items()]
    for name, source in resources.items():
        length, digest = _digest(source)
        lines += [f'file-resource "{name}" {{', f"length={length}", f"blake2b-256={digest}", "}"]
    return "\n".join(lines) + "\n" + body


def create_fw(
    out: Path,
    meta: Mapping[str, str],
    resources: Mapping[str, Path | bytes],
    body: str,
    private_key: Ed25519PrivateKey | None = None,
    compresslevel: int = 6,
    stored: Mapping[str, bytes] | None = None,
) -> bytes:
    """Write the archive to ``out``; returns the ``meta.conf`` bytes.

    ``stored`` replaces what goes into the archive for some resources while
    ``meta.conf`` still describes the resource itself: a delta ``.fw`` stores an
    xdelta3 patch for a resource whose ``length`` and ``blake2b-256`` are those
    of the patched result (fwup's delta updates).
    """
    conf = meta_conf_text(meta, resources, body).encode()
    stored = stored or {}
    with zipfile.ZipFile(out, "w") as zf:
        if private_key is not None:
            zf.writestr(
                zipfile.ZipInfo("meta.conf.ed25519", (1980, 1, 1, 0, 0, 0)),
                private_key.sign(conf),
                zipfile.ZIP_STORED,
            )
        zf.writestr(
            zipfile.ZipInfo("meta.conf", (1980, 1, 1, 0, 0, 0)),
            conf,
            zipfile.ZIP_DEFLATED,
            compresslevel,
        )
        for name, resource in resources.items():
            source = stored.get(name, resource)
            info = zipfile.ZipInfo(f"data/{name}", (1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            # ZipFile.open() takes the level from the ZipInfo (renamed in 3.13).
            level_attr = "compress_level" if hasattr(info, "compress_level") else "_compresslevel"
            setattr(info, level_attr, compresslevel)
            info.file_size = len(source) if isinstance(source, bytes) else source.stat().st_size
            with zf.open(info, "w", force_zip64=info.file_size > 0x7FFFFFFF) as dst:
                if isinstance(source, bytes):
                    dst.write(source)
                else:
                    with source.open("rb") as src:
                        while chunk := src.read(CHUNK):
                            dst.write(chunk)
    return conf
