"""nhlink-hub-sim: a NervesHub stand-in for development, demos and tests.

It behaves as protocol.md §1 to §5 describe the server (nerves_hub_web, Oct 2024)
on 127.0.0.1: a real WebSocket server, a real HTTP file server, optional real
TLS with generated test certificates. It is a development tool, not a hub.

In-process API (for tests)
==========================

::

    from nhlink_devtools.hubsim import HubSim, HubSimConfig, SharedSecret

    config = HubSimConfig(shared_secrets=[SharedSecret("nhp_key", "secret")])
    async with HubSim(config) as sim:
        url = sim.ws_url + "/device-socket/websocket?vsn=2.0.0"   # NH1
        # mTLS: HubSimConfig(tls=True); url = sim.ws_url + "/socket/websocket?vsn=2.0.0"
        #       pair = sim.issue_device_cert("dev-1"); trust sim.pki.ca.cert
        device = await sim.wait_for_join("dev-1")          # a DeviceRecord
        device.join_params                                  # latest "device" phx_join payload
        await sim.offer_update("dev-1", "x.fw", firmware_meta={"version": "2.0.0"})
        await sim.wait_for_event("dev-1", "fwup_progress", count=3)
        sim.http_log[-1].range                              # "bytes=1000-"
        await sim.close_device("dev-1", 1012)

Addresses
    ``sim.ws_url`` (``ws://127.0.0.1:P`` or ``wss://``; append
    ``/socket/websocket`` or ``/device-socket/websocket`` and ``?vsn=2.0.0``),
    ``sim.http_url`` (file server), ``sim.control_url`` (only with
    ``control_port`` set). Ports are chosen at start (``*_port=0``) and kept
    by ``await sim.stop()`` / ``await sim.start()`` (kill-and-restart: stop
    aborts every TCP connection, no close frame; ``stop(abort=False)`` closes
    with 1001). Devices, frames and logs survive a restart.

Configuration (:class:`HubSimConfig`; fields marked *live* in its source can be
changed on ``sim.config`` while running)
    ``shared_secrets`` (:class:`SharedSecret` ``key, secret, identifier=None``),
    ``nh1_max_age_s`` (90), ``clock`` (seconds; NH1 expiry and the ``Date`` of
    refused upgrades use it),
    ``tls``/``http_tls``/``cert_dir``, ``idle_timeout_s`` (180),
    ``join_reply`` (``"ok"``, ``"error"`` → ``{"error":"could not connect"}``,
    ``"legacy"`` → the offered update in the reply, ``"none"`` → no reply),
    ``reply_heartbeats``, ``fastlane`` (pushes as ``[null,null,…]``),
    ``health_check`` (push ``check_health`` after join), ``fwup_public_keys``
    and ``archive_public_keys`` (answers to ``"on_connect"``),
    ``push_update_on_join``, ``require_url_token``, ``fw_dir``, ``topics``;
    the newer device API (:mod:`nhlink_devtools.hubsim.device_api`):
    ``extensions`` (enabled names, ``("health", "geo")``), ``health_interval_s``
    (3600), ``geo_interval_s`` (None), ``update_modes`` (True),
    ``penalty_box_s`` (3600), ``request_update_busy`` (0),
    ``busy_delay_for_min`` (5).

Observation
    ``sim.devices[id]`` → :class:`DeviceRecord`: ``connected``, ``joined``,
    ``join_params``, ``joins`` (every phx_join :class:`SimFrame`),
    ``frames_received`` / ``frames_sent`` (every :class:`SimFrame`, heartbeats
    included), ``events(name)`` (payloads the device sent on "device"),
    ``joined_topics``, ``connections``, ``disconnects`` (reasons), ``auth``
    (:class:`Accepted`: ``identifier``, ``auth`` "cert"/"nh1", ``key``,
    ``path``, ``headers``).
    ``sim.handshakes`` → every upgrade request (:class:`HandshakeRecord`: path,
    status 101/401/403…, reason). ``sim.http_log`` → every file request
    (:class:`HttpLogEntry`: method, path, range, retry_number, user_agent,
    headers, attempt, token_ok, status, fault, bytes_sent, completed, first_byte_at:
    time.monotonic() of the first body byte).
    ``await sim.wait_for(predicate, timeout=5.0)`` re-evaluates
    ``predicate()`` on every change and returns its truthy value, else raises
    ``TimeoutError``; shortcuts ``wait_for_join(id)``,
    ``wait_for_event(id, event, count=1)``. ``device.events(name, "extensions")``
    gives what the device sent on ``extensions``; ``device.api``
    (:class:`~nhlink_devtools.hubsim.device_api.DeviceApiState`): ``update_mode``,
    ``managed_updates_allowed``, ``blocked_until`` (the penalty box),
    ``extensions_offered``/``extensions_attached``, ``health_checks_sent``,
    ``update_types`` ("delta"/"full" per offer).

Commands (all raise :class:`~nhlink_dbus.errors.StateError` when the device is
not connected / has not joined)
    ``await sim.push(id, event, payload={}, topic="device", fastlane=None)``;
    ``await sim.offer_update(id, path, firmware_meta=None, deployment_id=None,
    push=True)`` (serves the file at ``/firmware/<name>``, metadata from its
    meta.conf, uuid = fwup's meta-uuid; also answers ``check_update_available``;
    never raises when the device is away; each offer carries ``size``,
    ``checksum``, ``partials_checksums``; ``delta=path`` serves a delta when the
    server's rule allows it for the device's ``fwup_version``);
    ``await sim.set_update_mode(id, mode, allowed=...)`` (the operator);
    ``sim.clear_update(id)``;
    ``await sim.offer_archive(id, path, info=None)`` (served at
    ``/archives/<uuid>.fw``, re-pushed after every join);
    ``await sim.channel_error(id, "phx_error"|"phx_close")``;
    ``await sim.close_device(id, code=1000)``; ``sim.break_connection(id)``
    (TCP abort); ``await sim.drain(1012)``; ``await sim.send_frame(id, SimFrame(…))``.

Files and faults
    ``sim.add_file(path_or_bytes, url_path=None)`` → pre-signed URL;
    ``sim.set_fault(kind="cut", path="/firmware/x.fw", after=4096, times=1)``
    (kinds ``cut``, ``stall``, ``status``, ``416``, ``redirect``, ``200``,
    ``slow`` with ``rate`` bytes per second, ``corrupt`` with ``length``;
    see :mod:`nhlink_devtools.hubsim.files`), ``sim.clear_faults()``.

Certificates
    :mod:`nhlink_devtools.hubsim.certs`: ``generate_pki(folder)``,
    ``issue_device_cert(ca, identifier, folder, valid=(not_before, not_after))``,
    ``generate_ca(folder, name)`` (an unknown CA), ``issue_server_cert(pki,
    server_names=..., valid=...)`` (another name, or outside its validity),
    ``client_context(pki, device)``. With ``tls=True`` the
    sim's own PKI is ``sim.pki`` and ``sim.issue_device_cert(identifier)``.

Control API and CLI: :mod:`nhlink_devtools.hubsim.control` and
:mod:`nhlink_devtools.hubsim.cli` (``nhlink-hub-sim --help``).
"""

from nhlink_devtools.hubsim.auth import Accepted, SharedSecret
from nhlink_devtools.hubsim.files import Fault, HttpLogEntry
from nhlink_devtools.hubsim.frames import SimFrame
from nhlink_devtools.hubsim.sim import DeviceRecord, HandshakeRecord, HubSim, HubSimConfig

__all__ = [
    "Accepted",
    "DeviceRecord",
    "Fault",
    "HandshakeRecord",
    "HttpLogEntry",
    "HubSim",
    "HubSimConfig",
    "SharedSecret",
    "SimFrame",
]
