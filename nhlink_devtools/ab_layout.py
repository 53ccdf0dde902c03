"""A small A/B firmware layout for demos, tests and benchmarks.

The same shape as the recorded ``ab.fw`` fixture (tests/fixtures/fwup/conf/ab.conf):
an MBR, a U-Boot environment holding the Nerves KV (``nerves_fw_active``,
``a.nerves_fw_*``, ``b.nerves_fw_*``), rootfs A and B, and a data partition.
``complete`` initialises a blank medium with slot A; ``upgrade`` writes the slot
that is not running and switches to it last. Offsets are 512-byte blocks.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nhlink_devtools.fw_builder import create_fw

ENV_OFFSET = 256
ENV_COUNT = 16
ROOTFS_A = 4096


@dataclass(frozen=True)
class AbLayout:
    rootfs_blocks: int = 40960  # 20 MiB per slot

    @property
    def rootfs_b(self) -> int:
        return ROOTFS_A + self.rootfs_blocks

    @property
    def data_offset(self) -> int:
        return self.rootfs_b + self.rootfs_blocks

    @property
    def image_bytes(self) -> int:
        return (self.data_offset + 16384) * 512

    def kv_spec(self, image: str | Path) -> str:
        """The daemon's ``firmware.kv`` value for an image with this layout."""
        return f"uboot-env:{image}:{ENV_OFFSET * 512:#x}:{ENV_COUNT * 512:#x}"


def _meta_block(slot: str, meta: dict[str, str]) -> str:
    items = []
    for key in ("product", "description", "version", "platform", "architecture", "author"):
        items.append(f'4,uboot_setenv,"uboot-env",{slot}.nerves_fw_{key},"{meta[key]}"')
    items.append(f'4,uboot_setenv,"uboot-env",{slot}.nerves_fw_uuid,"${{FWUP_META_UUID}}"')
    return ",".join(items)


def _body(
    layout: AbLayout, meta: dict[str, str], devpath: str, delta_blocks: int | None = None
) -> str:
    la = layout
    mbr = []
    for name, boot in (("mbr-a", 0), ("mbr-b", 1)):
        parts = []
        for i, (off, count) in enumerate(
            [(ROOTFS_A, la.rootfs_blocks), (la.rootfs_b, la.rootfs_blocks), (la.data_offset, 16384)]
        ):
            flag = "boot=true\n" if i == boot else ""
            parts.append(
                f'partition "{i}" {{\nblock-offset={off}\nblock-count={count}\ntype=131\n{flag}}}\n'
            )
        mbr.append(f'mbr "{name}" {{\nsignature=0x6e686c6b\n{"".join(parts)}}}\n')
    env = (
        f'uboot-environment "uboot-env" {{\nblock-offset={ENV_OFFSET}\n'
        f"block-count={ENV_COUNT}\n}}\n"
    )
    complete = (
        'task "complete" {\non-init {\nfunlist={2,mbr_write,"mbr-a",2,uboot_clearenv,"uboot-env",'
        '4,uboot_setenv,"uboot-env",nerves_fw_active,a,'
        '4,uboot_setenv,"uboot-env",nerves_fw_validated,1,'
        f'4,uboot_setenv,"uboot-env",nerves_fw_devpath,"{devpath}",'
        f"{_meta_block('a', meta)}}}\n}}\n"
        f'on-resource "rootfs.img" {{\nfunlist={{2,raw_write,{ROOTFS_A}}}\n}}\n}}\n'
    )
    upgrades = []
    for slot, other, offset in (("a", "b", ROOTFS_A), ("b", "a", la.rootfs_b)):
        # A delta's source is the running slot (the other one).
        source = la.rootfs_b if slot == "a" else ROOTFS_A
        delta = (
            ""
            if delta_blocks is None
            else f"delta-source-raw-offset={source}\ndelta-source-raw-count={delta_blocks}\n"
        )
        upgrades.append(
            f'task "upgrade.{slot}" {{\n'
            f'reqlist={{4,"require-uboot-variable","uboot-env",nerves_fw_active,{other}}}\n'
            f'on-init {{\nfunlist={{2,info,"Upgrading partition {slot.upper()}",'
            f'3,uboot_unsetenv,"uboot-env",{slot}.nerves_fw_version,'
            f'3,uboot_unsetenv,"uboot-env",{slot}.nerves_fw_uuid}}\n}}\n'
            f'on-resource "rootfs.img" {{\n{delta}funlist={{2,raw_write,{offset}}}\n}}\n'
            f"on-finish {{\nfunlist={{{_meta_block(slot, meta)},"
            f'4,uboot_setenv,"uboot-env",nerves_fw_validated,0,'
            f'4,uboot_setenv,"uboot-env",nerves_fw_active,{slot},'
            f'2,mbr_write,"mbr-{slot}",2,info,"Switched to partition {slot.upper()}"}}\n}}\n'
            f'on-error {{\nfunlist={{2,info,"upgrade.{slot} failed"}}\n}}\n}}\n'
        )
    fallback = (
        'task "upgrade.unrecognized" {\non-init {\nfunlist={2,error,'
        '"This medium has no A/B layout this firmware recognises"}\n}\n}\n'
    )
    return "".join(mbr) + env + complete + "".join(upgrades) + fallback


def build_ab_firmware(
    out: Path,
    version: str,
    rootfs: bytes | Path,
    private_key: Ed25519PrivateKey | None,
    *,
    layout: AbLayout = AbLayout(),
    product: str = "nhlink-demo",
    devpath: str = "/dev/sda",
    compresslevel: int = 6,
    delta_source_blocks: int | None = None,
    delta_from: bytes | None = None,
) -> bytes:
    """Write a signed A/B ``.fw``; returns its ``meta.conf``.

    ``delta_source_blocks`` names the running slot's first blocks as the delta
    source of the upgrade tasks (``delta-source-raw-offset``/``-count``): the
    firmware can then be delivered as a delta. ``delta_from`` (the running
    firmware's rootfs bytes) makes that *delta* ``.fw``, as NervesHub makes one
    (nerves_hub_web ``update_tool/fwup.ex``: the same ``meta.conf`` and signature,
    the data files replaced by xdelta3 patches): ``rootfs.img`` is stored as a
    patch made with the ``xdelta3`` program (``-A -S``, as fwup's tests make them).
    """
    meta = {
        "product": product,
        "description": f"{product} A/B firmware",
        "version": version,
        "platform": "x86_64",
        "architecture": "x86_64",
        "author": "nhlink-dbus",
    }
    top = {f"meta-{k}": v for k, v in meta.items()}
    stored: dict[str, bytes] = {}
    blocks = delta_source_blocks
    if delta_from is not None:
        target = rootfs if isinstance(rootfs, bytes) else rootfs.read_bytes()
        stored["rootfs.img"] = xdelta3_patch(delta_from, target)
        blocks = blocks or -(-len(delta_from) // 512)
    body = _body(layout, meta, devpath, blocks)
    return create_fw(
        out, top, {"rootfs.img": rootfs}, body, private_key, compresslevel, stored=stored
    )


def xdelta3_patch(source: bytes, target: bytes) -> bytes:
    """A VCDIFF patch from ``source`` to ``target`` made by the xdelta3 program."""
    with tempfile.TemporaryDirectory(prefix="nhlink-delta-") as folder:
        src, tgt, out = (Path(folder) / n for n in ("source", "target", "patch"))
        src.write_bytes(source)
        tgt.write_bytes(target)
        subprocess.run(
            ["xdelta3", "-A", "-S", "-f", "-e", "-s", str(src), str(tgt), str(out)],
            check=True,
            capture_output=True,
        )
        return out.read_bytes()
