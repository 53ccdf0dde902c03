"""``nhlink-dbus``: the daemon's entry point.

    nhlink-dbus --config /etc/nhlink/nhlink.toml [--log-level debug]

Reads the configuration once (a bad file stops start-up with one line naming
the file, the key and the problem, exit status 2), connects to the system bus
(``DBUS_SYSTEM_BUS_ADDRESS`` honoured) for logind and the ``org.nerveshub.Link``
face, and runs the service until SIGTERM or SIGINT (exit status 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

import nhlink_dbus
from nhlink_dbus.config import Config, exposure_warnings, load_config
from nhlink_dbus.errors import ConfigError

logger = logging.getLogger("nhlink_dbus")

DEFAULT_CONFIG = "/etc/nhlink/nhlink.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nhlink-dbus",
        description="The nhlink-dbus daemon: NervesHub device client on the system bus.",
    )
    p.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"configuration file ({DEFAULT_CONFIG})"
    )
    p.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="overrides logging.level of the configuration",
    )
    p.add_argument(
        "--no-bus",
        action="store_true",
        help="do not export org.nerveshub.Link (logind is still used for reboots)",
    )
    p.add_argument("--version", action="version", version=f"nhlink-dbus {nhlink_dbus.__version__}")
    return p


async def _connect_system_bus() -> object | None:
    from nhlink_dbus.aio.dbus_compat import system_bus  # noqa: PLC0415  (only when running)

    try:
        return await system_bus().connect()
    except Exception as exc:  # no system bus: the daemon still updates, but cannot reboot
        logger.error("cannot connect to the system bus: %s", exc)
        return None


def _without_pygobject() -> None:
    """Keep PyGObject out of this process.

    dbus-next imports it for its GLib main-loop support whenever it is installed, as it
    is on most desktops; the daemon runs on asyncio alone, and PyGObject would cost
    about 6 MiB of resident memory and a good part of the start-up.
    """
    if "gi" not in sys.modules:
        sys.modules["gi"] = None  # type: ignore[assignment]  # `import gi` raises ImportError


async def _amain(config: Config, export_bus: bool) -> int:
    from nhlink_dbus.aio.dbus_compat import disconnect_and_close  # noqa: PLC0415
    from nhlink_dbus.aio.logind import Logind  # noqa: PLC0415
    from nhlink_dbus.service import NhlinkService  # noqa: PLC0415

    for warning in exposure_warnings(config):
        logger.warning("%s", warning)
    bus = await _connect_system_bus()
    logind = Logind(bus) if bus is not None else None  # type: ignore[arg-type]
    # GeoClue2 and NetworkManager are asked on the same connection (device_io.py).
    service = await NhlinkService.create(config, logind=logind, system_bus=bus)
    face = None
    if export_bus and bus is not None:
        from nhlink_dbus.bus.server import serve  # noqa: PLC0415

        face = await serve(service, bus, group=config.decisions.group)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        await service.run()
    except asyncio.CancelledError:
        logger.info("stopping")
    finally:
        if face is not None:
            with contextlib.suppress(Exception):
                await face.close()
        if bus is not None:
            # Also collects a connection that died first (the bus stopping at
            # shutdown): an unretrieved EOFError would be logged as a traceback.
            await disconnect_and_close(bus)  # type: ignore[arg-type]
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write(f"nhlink-dbus: {exc}\n")
        return 2
    level = (args.log_level or config.logging.level).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _without_pygobject()
    try:
        return asyncio.run(_amain(config, export_bus=not args.no_bus))
    except ConfigError as exc:
        sys.stderr.write(f"nhlink-dbus: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
