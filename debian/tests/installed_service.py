#!/usr/bin/python3
"""autopkgtest: the installed nhlink-dbus, from its installed files, on a private bus.

Runs as root against the installed packages only (no source tree): Debian's
python3 and Debian 12's libraries, /usr/bin/nhlink-dbus, the installed D-Bus
policy, activation file and configuration file.

1. A private system bus (dbus-daemon) that loads every installed policy
   (/usr/share/dbus-1/system.d, /etc/dbus-1/system.d) and activates services
   from /usr/share/dbus-1/system-services.
2. ``busctl introspect org.nerveshub.Link`` activates the service through the
   installed activation file, with the installed /etc/nhlink/nhlink.toml: it
   starts not configured and says so (nhlinkctl status).
3. nhlink-fwup -V verifies a signed .fw and refuses a tampered copy.
4. The daemon against nhlink-hub-sim with python-dbusmock's logind: the hub
   pushes an update, nhlinkctl decides apply, the new firmware is written to the
   inactive slot of a disk image, logind is asked to reboot.

Nothing outside a temporary folder is touched; every process is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BUS_NAME = "org.nerveshub.Link"
OBJECT_PATH = "/org/nerveshub/Link"
INTERFACE = "org.nerveshub.Link1"
DEVICE = "kiosk-0042"
KEY, SECRET = "nhp_autopkgtestProductKey", "autopkgtestProductSecretThatStaysHere0123"
DEADLINE_S = 60.0  # guards against a hang only

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
  <includedir>/etc/dbus-1/system.d</includedir>
  <includedir>{extra_policy}</includedir>
  <servicedir>/usr/share/dbus-1/system-services</servicedir>
</busconfig>
"""

# python-dbusmock's logind needs to own org.freedesktop.login1 (systemd's policy
# allows root that too, where systemd is installed).
LOGIND_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.freedesktop.login1"/>
    <allow send_destination="org.freedesktop.login1"/>
  </policy>
</busconfig>
"""


def step(text: str) -> None:
    print(f"--- {text}", flush=True)


def wait_for(what: str, probe: Callable[[], T | None]) -> T:
    """Poll ``probe`` until it returns something true; fail after DEADLINE_S."""
    end = time.monotonic() + DEADLINE_S
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > end:
            raise SystemExit(f"FAIL: timed out waiting for {what}")
        time.sleep(0.1)


class Run:
    """The test's processes and folder; everything is stopped in ``close``."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nhlink-autopkgtest-"))
        self.dir.chmod(0o755)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ)

    def spawn(self, name: str, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        log = (self.dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, env=self.env, stderr=log, **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=DEADLINE_S, check=False
        )
        if check and result.returncode != 0:
            raise SystemExit(
                f"FAIL: {' '.join(argv)} exited {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result

    def logs(self) -> str:
        return "".join(
            f"==> {log.name}\n{log.read_text(errors='replace')[-3000:]}\n"
            for log in sorted(self.dir.glob("*.log"))
        )

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_bus(run: Run) -> None:
    policy = run.dir / "policy.d"
    policy.mkdir()
    (policy / "test-login1.conf").write_text(LOGIND_POLICY)
    conf = run.dir / "bus.conf"
    conf.write_text(BUS_CONFIG.format(socket=run.dir / "system_bus_socket", extra_policy=policy))
    bus = run.spawn(
        "dbus-daemon",
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
    )
    assert bus.stdout is not None
    address = bus.stdout.readline().decode().strip()
    if not address:
        raise SystemExit("FAIL: dbus-daemon did not start\n" + run.logs())
    run.env["DBUS_SYSTEM_BUS_ADDRESS"] = address
    print(f"private system bus at {address}")


def has_owner(run: Run, name: str) -> bool:
    answer = run.run(
        "busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
        "org.freedesktop.DBus", "NameHasOwner", "s", name,
    )  # fmt: skip
    return answer.stdout.strip() == "b true"


def name_owner_pid(run: Run) -> int | None:
    result = run.run(
        "busctl",
        "--system",
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetConnectionUnixProcessID",
        "s",
        BUS_NAME,
        check=False,
    )
    return int(result.stdout.split()[1]) if result.returncode == 0 else None


def activated_service(run: Run) -> None:
    step("bus activation with the installed files and /etc/nhlink/nhlink.toml as shipped")
    introspection = run.run("busctl", "--system", "introspect", BUS_NAME, OBJECT_PATH).stdout
    print(introspection)
    for member in (INTERFACE, ".Decide", ".InstallFile", ".UpdateAvailable", ".LastError"):
        if member not in introspection:
            raise SystemExit(f"FAIL: {member} not in the introspection")
    status = json.loads(run.run("nhlinkctl", "--json", "status").stdout)
    print(json.dumps(status, indent=1))
    expected = "not configured: /etc/nhlink/nhlink.toml has no [hub] table"
    if not status["LastError"].startswith(expected) or status["Connected"] is not False:
        raise SystemExit(f"FAIL: not the not-configured state: {status}")
    refused = run.run("nhlinkctl", "check", check=False)
    if refused.returncode != 1 or "not configured" not in refused.stderr:
        raise SystemExit(f"FAIL: check without a hub: {refused}")
    print(f"nhlinkctl check: {refused.stderr.strip()}")
    pid = name_owner_pid(run)
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    print(f"activated: pid {pid}: {b' '.join(cmdline).decode()}")
    os.kill(pid, signal.SIGTERM)
    wait_for("the activated service to stop", lambda: name_owner_pid(run) is None)


def firmware(run: Run) -> tuple[dict[str, str], str]:
    """Signed v1 and v2 of a small A/B firmware, and the public key."""
    from nhlink_dbus.core.fwup_meta import meta_uuid  # noqa: PLC0415
    from nhlink_devtools.ab_layout import build_ab_firmware  # noqa: PLC0415
    from nhlink_devtools.fw_builder import generate_key_pair, load_private_key  # noqa: PLC0415

    private, public = generate_key_pair()
    key = load_private_key(private)
    fw_dir = run.dir / "firmware"
    fw_dir.mkdir()
    uuids = {}
    for version in ("1.0.0", "2.0.0"):
        conf = build_ab_firmware(fw_dir / f"kiosk-{version}.fw", version, os.urandom(1 << 20), key)
        uuids[version] = meta_uuid(conf)
    (run.dir / "fwup-key.pub").write_text(public + "\n")
    return uuids, public


def verify_with_nhlink_fwup(run: Run) -> None:
    step("nhlink-fwup -V")
    fw = run.dir / "firmware" / "kiosk-2.0.0.fw"
    key = str(run.dir / "fwup-key.pub")
    good = run.run("nhlink-fwup", "-V", "-i", str(fw), "-p", key)
    print(f"nhlink-fwup -V {fw.name}: exit 0 {good.stdout.strip()}")
    tampered = run.dir / "tampered.fw"
    data = bytearray(fw.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the rootfs resource
    tampered.write_bytes(data)
    bad = run.run("nhlink-fwup", "-V", "-i", str(tampered), "-p", key, check=False)
    if bad.returncode != 1:
        raise SystemExit(f"FAIL: a tampered archive verified: {bad}")
    print(f"nhlink-fwup -V tampered.fw: exit 1 {(bad.stdout + bad.stderr).strip()}")


def update_from_the_simulator(run: Run, uuids: dict[str, str], public: str) -> None:
    from nhlink_dbus.core.kv_format import active_slot_metadata  # noqa: PLC0415
    from nhlink_dbus.kv_store import read_kv  # noqa: PLC0415
    from nhlink_devtools.ab_layout import AbLayout  # noqa: PLC0415

    step("an update from nhlink-hub-sim, applied to a disk image, then logind Reboot")
    layout = AbLayout()
    image = run.dir / "disk.img"
    with image.open("wb") as fh:
        fh.truncate(layout.image_bytes)
    v1 = run.dir / "firmware" / "kiosk-1.0.0.fw"
    run.run(
        "nhlink-fwup",
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
    )
    kv_spec = layout.kv_spec(image)
    before = active_slot_metadata(read_kv(kv_spec))
    print(f"image runs {before['nerves_fw_version']} ({before['nerves_fw_uuid']})")

    run.spawn(
        "logind",
        [sys.executable, "-m", "dbusmock", "--system", "--template", "logind"],
        stdout=subprocess.DEVNULL,
    )
    wait_for("dbusmock's logind", lambda: has_owner(run, "org.freedesktop.login1"))

    secrets = run.dir / "sim-secrets"
    secrets.write_text(f"{KEY}:{SECRET}\n")
    sim = run.spawn(
        "hub-sim",
        [
            "nhlink-hub-sim",
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
            str(run.dir / "firmware"),
            "--no-health-check",
        ],
        stdout=subprocess.PIPE,
    )
    assert sim.stdout is not None
    urls = json.loads(sim.stdout.readline())
    control = urls["control_url"]

    secret = run.dir / "hub-secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    config = run.dir / "nhlink.toml"
    config.write_text(f"""[hub]
url = "{urls["ws_url"]}"
identifier = "{DEVICE}"
[hub.shared_secret]
key = "{KEY}"
secret_file = "{secret}"
[firmware]
kv = "{kv_spec}"
devpath = "{image}"
applier = "builtin"
public_keys = ["{public}"]
[decisions]
timeout_ms = 600000
[reboot]
delay_ms = 0
[service]
state_dir = "{run.dir / "state"}"
[archives]
dir = "{run.dir / "archives"}"
[media]
enabled = false
""")
    # Its own state folder: the update journal this run leaves ("applied, awaiting the
    # reboot", on this boot) must not make the testbed's installed service reboot it.
    run.spawn("nhlink-dbus", ["/usr/bin/nhlink-dbus", "--config", str(config)])

    def device() -> dict[str, object]:
        try:
            with urllib.request.urlopen(f"{control}/_sim/devices/{DEVICE}", timeout=5) as answer:
                return json.loads(answer.read())  # type: ignore[no-any-return]
        except OSError:
            return {}

    wait_for("the device to join the hub", lambda: "device" in device().get("joined_topics", {}))
    joined = device()["join_params"]
    assert isinstance(joined, dict)
    print(f"joined the hub with nerves_fw_uuid {joined['nerves_fw_uuid']}")
    if joined["nerves_fw_uuid"] != uuids["1.0.0"]:
        raise SystemExit(f"FAIL: joined with {joined}")
    status = json.loads(run.run("nhlinkctl", "--json", "status").stdout)
    print(f"nhlinkctl status: State={status['State']} Connected={status['Connected']}")

    run.run(
        "nhlink-hub-sim",
        "--control",
        control,
        "push",
        "update",
        "--device",
        DEVICE,
        "--file",
        str(run.dir / "firmware" / "kiosk-2.0.0.fw"),
    )

    def pending() -> list[dict[str, object]]:
        return json.loads(run.run("nhlinkctl", "--json", "pending").stdout)  # type: ignore[no-any-return]

    (request,) = wait_for("the update offer on the bus", pending)
    print(f"pending: {request['request_id']} {request['info']}")
    run.run("nhlinkctl", "decide", str(request["request_id"]), "apply")

    def reboots() -> int:
        calls = run.run(
            "busctl",
            "--system",
            "call",
            "org.freedesktop.login1",
            "/org/freedesktop/login1",
            "org.freedesktop.DBus.Mock",
            "GetMethodCalls",
            "s",
            "Reboot",
        ).stdout.split()
        return int(calls[1])  # "a(tav) N ..."

    wait_for("logind Reboot", reboots)
    after = active_slot_metadata(read_kv(kv_spec))
    print(
        f"logind Reboot called; image now runs {after['nerves_fw_version']} "
        f"({after['nerves_fw_uuid']}) from slot {read_kv(kv_spec)['nerves_fw_active']}"
    )
    if after["nerves_fw_uuid"] != uuids["2.0.0"]:
        raise SystemExit(f"FAIL: the image does not run 2.0.0: {after}")
    progress = [
        frame
        for frame in json.loads(
            run.run("nhlink-hub-sim", "--control", control, "devices", "--device", DEVICE).stdout
        ).get("frames_received", [])
        if "fwup_progress" in json.dumps(frame)
    ]
    print(f"the hub received {len(progress)} fwup_progress pushes")


def main() -> int:
    if os.geteuid() != 0:
        raise SystemExit("run as root (the policy lets only root own org.nerveshub.Link)")
    versions = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f",
            "${Package} ${Version}\\n",
            "nhlink-dbus",
            "python3",
            "python3-dbus-next",
            "python3-websockets",
            "python3-httpx",
            "python3-cryptography",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(versions, end="")
    run = Run()
    try:
        start_bus(run)
        activated_service(run)
        uuids, public = firmware(run)
        verify_with_nhlink_fwup(run)
        update_from_the_simulator(run, uuids, public)
    except BaseException:
        print(run.logs(), file=sys.stderr)
        raise
    finally:
        run.close()
    print("PASS: installed-service")
    return 0


if __name__ == "__main__":
    sys.exit(main())
