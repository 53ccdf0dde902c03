#!/usr/bin/python3
"""Helper of packaging/fresh-root-test's booted phase; runs in the fresh root with
Debian's python3 and the installed packages (nhlink-dbus, nhlink-hub-sim).

    booted_helper.py prepare DIR          signed v1/v2 firmware, key, a disk image running v1
    booted_helper.py wait-join URL DEVICE UUID
                                          until DEVICE joined the simulator reporting UUID
    booted_helper.py kv SPEC              the running slot's metadata, as JSON
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEADLINE_S = 90.0  # guards against a hang only


def prepare(folder: Path) -> None:
    from nhlink_dbus.core.fwup_meta import meta_uuid  # noqa: PLC0415
    from nhlink_devtools.ab_layout import AbLayout, build_ab_firmware  # noqa: PLC0415
    from nhlink_devtools.fw_builder import generate_key_pair, load_private_key  # noqa: PLC0415

    private, public = generate_key_pair()
    key = load_private_key(private)
    (folder / "firmware").mkdir(parents=True)
    uuids = {}
    for version in ("1.0.0", "2.0.0"):
        path = folder / "firmware" / f"kiosk-{version}.fw"
        uuids[version] = meta_uuid(build_ab_firmware(path, version, os.urandom(1 << 20), key))
    layout = AbLayout()
    image = folder / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(layout.image_bytes)
    subprocess.run(
        ["nhlink-fwup", "-a", "-q", "-d", str(image), "-t", "complete",
         "-i", str(folder / "firmware" / "kiosk-1.0.0.fw"), "--public-key", public],
        check=True,
    )  # fmt: skip
    env_offset, env_size = layout.kv_spec("X").split(":")[2:]
    print(json.dumps({"public": public, "uuids": uuids, "kv_offset": env_offset,
                      "kv_size": env_size}))  # fmt: skip


def wait_join(control: str, device: str, uuid: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{control}/_sim/devices/{device}", timeout=5) as answer:
                state = json.loads(answer.read())
        except OSError:
            state = {}
        joined = "device" in state.get("joined_topics", {})
        if joined and state.get("join_params", {}).get("nerves_fw_uuid") == uuid:
            print(f"{device} joined the hub reporting nerves_fw_uuid {uuid}")
            return
        time.sleep(0.2)
    raise SystemExit(f"FAIL: {device} did not join reporting {uuid}")


def kv(spec: str) -> None:
    from nhlink_dbus.core.kv_format import active_slot_metadata  # noqa: PLC0415
    from nhlink_dbus.kv_store import read_kv  # noqa: PLC0415

    print(json.dumps(active_slot_metadata(read_kv(spec))))


def main(argv: list[str]) -> int:
    match argv:
        case ["prepare", folder]:
            prepare(Path(folder))
        case ["wait-join", control, device, uuid]:
            wait_join(control, device, uuid)
        case ["kv", spec]:
            kv(spec)
        case _:
            raise SystemExit(__doc__)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
