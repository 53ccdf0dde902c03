"""A FAT file system as mtools lists it: label, tree, attributes and every file's sha256.

fwup's FAT writer (FatFs) and ours (mtools) may place clusters and directory entries
differently while holding the same files, so FAT volumes are compared by this listing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MTOOLS_ENV = {
    "MTOOLSRC": "/dev/null",
    "MTOOLS_SKIP_CHECK": "1",
    "PATH": os.environ.get("PATH", os.defpath),
    "LC_ALL": "C",
    "TZ": "UTC",
}


def fat_listing(image: Path, block_offset: int) -> str:
    """mtools' view of the FAT volume at ``block_offset`` (or why mtools cannot read it)."""
    target = f"{image}@@{block_offset * 512}"
    out = []
    for tool in (["mlabel", "-s"], ["mdir", "-/", "-a"], ["mattrib", "-/"]):
        r = subprocess.run(
            [*tool, "-i", target, "::"], env=MTOOLS_ENV, capture_output=True, check=False
        )
        text = (r.stdout + r.stderr).decode("utf-8", "replace").replace(str(image), "IMAGE")
        out.append(f"$ {tool[0]} (exit {r.returncode})\n{text}")
        if r.returncode != 0:
            return "\n".join(out)
    scratch = Path(tempfile.mkdtemp(prefix="fatlist-"))
    try:
        r = subprocess.run(
            ["mcopy", "-s", "-n", "-i", target, "::/", str(scratch)],
            env=MTOOLS_ENV,
            capture_output=True,
            check=False,
        )
        out.append(f"$ mcopy (exit {r.returncode})")
        for path in sorted(scratch.rglob("*")):
            if path.is_file():
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out.append(f"{path.relative_to(scratch)}: {path.stat().st_size} {digest}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return "\n".join(out) + "\n"
