"""``make demo``: the whole product on this machine, in under a minute.

A private system bus that loads the shipped D-Bus policy, python-dbusmock's
logind, ``nhlink-hub-sim`` serving a signed two-slot firmware, and the real
daemon with a disk image as its device. ``nhlinkctl watch`` shows what happens;
the hub pushes an update; a kiosk answers it over D-Bus; the update is written
into the inactive slot of the image with progress; logind is asked to reboot;
the daemon, restarted as after the reboot, reports the new firmware to the hub.
Nothing touches the host's real system bus, network or disks.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nhlink_dbus.core.fwup_meta import meta_uuid  # noqa: E402
from nhlink_dbus.core.kv_format import active_slot_metadata  # noqa: E402
from nhlink_dbus.kv_store import read_kv  # noqa: E402
from nhlink_devtools.ab_layout import AbLayout, build_ab_firmware  # noqa: E402
from nhlink_devtools.fw_builder import generate_key_pair, load_private_key  # noqa: E402
from tests.harness import LogindMock, start_system_bus  # noqa: E402

PY = sys.executable  # every tool runs as `python -m`, with the interpreter running the demo


def tool(module: str) -> list[str]:
    return [PY, "-m", module]


FWUP, SIM, DAEMON, CTL = (
    tool(m)
    for m in (
        "nhlink_dbus.fwup.cli",
        "nhlink_devtools.hubsim.cli",
        "nhlink_dbus.daemon",
        "nhlink_dbus.ctl",
    )
)
DEVICE = "kiosk-0042"
KEY, SECRET = "nhp_demoProductKey", "demoProductSecretThatNeverLeavesThisMachine"
LAYOUT = AbLayout()
GROUP = grp.getgrgid(os.getgid()).gr_name if os.getuid() != 0 else "nhlink"


def _demo_policies() -> dict[str, str]:
    """As root, the shipped policy is all the demo needs (plus the mock logind's name).
    As another user, that user also gets what root has on this private bus: owning the
    service and logind names and calling the service (the service's own group check is
    satisfied by running with ``decisions.group`` = the user's group)."""
    from tests.harness.bus import LOGIND_TEST_POLICY  # noqa: PLC0415

    policies = {"test-login1.conf": LOGIND_TEST_POLICY}
    if os.getuid() != 0:
        user = pwd.getpwuid(os.getuid()).pw_name
        policies["demo-user.conf"] = f"""<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="{user}">
    <allow own="org.nerveshub.Link"/>
    <allow own="org.freedesktop.login1"/>
    <allow send_destination="org.nerveshub.Link" send_interface="org.nerveshub.Link1"/>
    <allow send_destination="org.freedesktop.login1"/>
  </policy>
</busconfig>
"""
    return policies


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def control(url: str, path: str) -> object:
    with urllib.request.urlopen(url + path, timeout=5) as resp:
        return json.loads(resp.read())


def main() -> int:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="nhlink-demo-"))
    procs: list[subprocess.Popen[bytes]] = []
    bus = start_system_bus(extra_policies=_demo_policies())
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address, PYTHONUNBUFFERED="1")
    logind = LogindMock(bus)
    try:
        say("Private system bus with the shipped policy, and a mock logind")
        print(f"    DBUS_SYSTEM_BUS_ADDRESS={bus.address}")

        say("Signed A/B firmware 1.0.0 (installed) and 2.0.0 (to be offered)")
        private, public = generate_key_pair()
        key = load_private_key(private)
        fw_dir = work / "firmware"
        fw_dir.mkdir()
        v1, v2 = fw_dir / "kiosk-1.0.0.fw", fw_dir / "kiosk-2.0.0.fw"
        uuid1 = meta_uuid(build_ab_firmware(v1, "1.0.0", os.urandom(8 << 20), key))
        uuid2 = meta_uuid(build_ab_firmware(v2, "2.0.0", os.urandom(8 << 20), key))
        image = work / "disk.img"
        with image.open("wb") as fh:
            fh.truncate(LAYOUT.image_bytes)
        subprocess.run(
            [
                *FWUP,
                "-a",
                "-q",
                "-d",
                str(image),
                "-t",
                "complete",
                "-i",
                str(v1),
                "--public-key",
                public,
            ],
            check=True,
        )
        print(f"    disk image {image} runs 1.0.0 ({uuid1}) in slot A")

        say("nhlink-hub-sim (a NervesHub stand-in on 127.0.0.1)")
        secrets = work / "sim-secrets"
        secrets.write_text(f"{KEY}:{SECRET}\n")
        sim_log = (work / "sim.log").open("wb")
        sim = subprocess.Popen(
            [
                *SIM,
                "serve",
                "--port",
                "0",
                "--http-port",
                "0",
                "--control-port",
                "0",
                "--shared-secret-file",
                str(secrets),
                "--fw",
                str(fw_dir),
                "--no-health-check",
            ],
            stdout=subprocess.PIPE,
            stderr=sim_log,
        )
        procs.append(sim)
        assert sim.stdout is not None
        urls = json.loads(sim.stdout.readline())
        print(f"    hub {urls['ws_url']}, control API {urls['control_url']}")

        say("The daemon: nhlink-dbus --config nhlink.toml")
        secret_file = work / "hub-secret"
        secret_file.write_text(SECRET + "\n")
        secret_file.chmod(0o600)
        config = work / "nhlink.toml"
        config.write_text(f"""[hub]
url = "{urls["ws_url"]}"
identifier = "{DEVICE}"
[hub.shared_secret]
key = "{KEY}"
secret_file = "{secret_file}"
[firmware]
kv = "{LAYOUT.kv_spec(image)}"
devpath = "{image}"
applier = "builtin"
public_keys = ["{public}"]
[decisions]
timeout_ms = 30000
group = "{GROUP}"
[reboot]
delay_ms = 3000
[archives]
dir = "{work / "archives"}"
[media]
enabled = false
""")
        print("    " + config.read_text().replace("\n", "\n    ").rstrip())
        daemon_log = work / "daemon.log"

        def start_daemon() -> subprocess.Popen[bytes]:
            p = subprocess.Popen(
                [*DAEMON, "--config", str(config)],
                env=env,
                stdout=daemon_log.open("ab"),
                stderr=subprocess.STDOUT,
            )
            procs.append(p)
            return p

        daemon = start_daemon()

        def device_state() -> dict[str, object]:
            try:
                d = control(urls["control_url"], f"/_sim/devices/{DEVICE}")
            except OSError:
                return {}
            return d if isinstance(d, dict) else {}

        def joined() -> dict[str, object] | None:
            d = device_state()
            return d if d.get("connected") and "device" in d.get("joined_topics", {}) else None

        device = wait_for(joined, 20, "the device to join the hub")
        print(
            f"    joined the hub reporting nerves_fw_uuid = "
            f"{device['join_params']['nerves_fw_uuid']}"
        )

        def face_up() -> bool:
            status = subprocess.run([*CTL, "status"], env=env, capture_output=True, check=False)
            return status.returncode == 0

        wait_for(face_up, 10, "the bus face")

        say("nhlinkctl watch (what a kiosk sees on org.nerveshub.Link)")
        watch = subprocess.Popen([*CTL, "watch"], env=env)
        procs.append(watch)
        kiosk = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "kiosk_answer.py"), "--once"], env=env
        )
        procs.append(kiosk)
        time.sleep(1.0)

        say("The hub pushes firmware 2.0.0; the kiosk answers 'apply' over D-Bus")
        subprocess.run(
            [
                *SIM,
                "--control",
                urls["control_url"],
                "push",
                "update",
                "--device",
                DEVICE,
                "--file",
                str(v2),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_for(logind.reboot_calls, 60, "the reboot request")
        time.sleep(0.5)
        say(
            f"logind received Reboot(interactive={logind.reboot_calls()[0]}) "
            "(python-dbusmock recorded it; nothing was rebooted)"
        )
        kv = read_kv(LAYOUT.kv_spec(image))
        print(
            f"    U-Boot environment now: nerves_fw_active={kv['nerves_fw_active']}, "
            f"version {active_slot_metadata(kv).get('nerves_fw_version')}"
        )

        say("'After the reboot': the daemon restarts and joins with the new firmware")
        daemon.terminate()
        daemon.wait(10)
        before = device_state().get("connections", 0)
        daemon = start_daemon()

        def rejoined() -> dict[str, object] | None:
            d = device_state()
            later = d.get("connections", 0) > before  # type: ignore[operator]
            return d if later and joined() else None

        device = wait_for(rejoined, 20, "the re-join")
        reported = device["join_params"]["nerves_fw_uuid"]  # type: ignore[index]
        print(
            f"    the hub sees nerves_fw_uuid = {reported}"
            f" ({'2.0.0: the update worked' if reported == uuid2 else 'unexpected!'})"
        )
        kept = os.environ.get("NHLINK_DEMO_KEEP") == "1"
        where = f"Logs and image: {work}" if kept else "NHLINK_DEMO_KEEP=1 keeps the logs and image"
        say(f"Done in {time.monotonic() - started:.1f} s. {where}")
        return 0 if reported == uuid2 else 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        logind.stop()
        bus.stop()
        if os.environ.get("NHLINK_DEMO_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
