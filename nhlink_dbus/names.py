"""Every D-Bus name the project uses, in one place (STYLE habit 5).

Our own service's names are DESIGN §2's contract; the logind names are
systemd-logind's ``org.freedesktop.login1(5)`` API; GeoClue2's and
NetworkManager's are their D-Bus APIs.
"""

from __future__ import annotations

from typing import Final

# --- our service (DESIGN §2) ------------------------------------------------
BUS_NAME: Final = "org.nerveshub.Link"
OBJECT_PATH: Final = "/org/nerveshub/Link"
INTERFACE: Final = "org.nerveshub.Link1"
ERROR_PREFIX: Final = "org.nerveshub.Link1.Error."
# Errors that are not a RequestError subclass (those map to ERROR_PREFIX + class name).
ERROR_FAILED: Final = ERROR_PREFIX + "Failed"  # another NhlinkError: its message is ours
ERROR_INTERNAL: Final = ERROR_PREFIX + "Internal"  # a bug: generic message, traceback logged
DEFAULT_ACCESS_GROUP: Final = "nhlink"  # DESIGN §2: root and this group may call methods
# Documentation annotation in introspection data (on the interface and every member).
DOCSTRING_ANNOTATION: Final = "org.freedesktop.DBus.DocString"

# --- the message bus itself (D-Bus specification, "Message Bus Messages") ------
DBUS_NAME: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"
DBUS_INTERFACE: Final = "org.freedesktop.DBus"
DBUS_PROPERTIES: Final = "org.freedesktop.DBus.Properties"
DBUS_INTROSPECTABLE: Final = "org.freedesktop.DBus.Introspectable"
DBUS_ERROR_ACCESS_DENIED: Final = "org.freedesktop.DBus.Error.AccessDenied"
DBUS_ERROR_SERVICE_UNKNOWN: Final = "org.freedesktop.DBus.Error.ServiceUnknown"
DBUS_ERROR_NAME_HAS_NO_OWNER: Final = "org.freedesktop.DBus.Error.NameHasNoOwner"

# --- GeoClue2 (its org.freedesktop.GeoClue2.*.xml API) and NetworkManager ------
GEOCLUE_BUS_NAME: Final = "org.freedesktop.GeoClue2"
GEOCLUE_MANAGER_PATH: Final = "/org/freedesktop/GeoClue2/Manager"
GEOCLUE_MANAGER_INTERFACE: Final = "org.freedesktop.GeoClue2.Manager"  # GetClient, DeleteClient
GEOCLUE_CLIENT_INTERFACE: Final = "org.freedesktop.GeoClue2.Client"  # Start, Stop, LocationUpdated
GEOCLUE_LOCATION_INTERFACE: Final = "org.freedesktop.GeoClue2.Location"  # Latitude, Longitude, …
NM_BUS_NAME: Final = "org.freedesktop.NetworkManager"
NM_PATH: Final = "/org/freedesktop/NetworkManager"
NM_INTERFACE: Final = "org.freedesktop.NetworkManager"  # GetDeviceByIpIface
NM_DEVICE_INTERFACE: Final = "org.freedesktop.NetworkManager.Device"  # DeviceType

# --- systemd-logind -----------------------------------------------------------
LOGIND_BUS_NAME: Final = "org.freedesktop.login1"
LOGIND_PATH: Final = "/org/freedesktop/login1"
LOGIND_MANAGER_INTERFACE: Final = "org.freedesktop.login1.Manager"
LOGIND_INHIBIT: Final = "Inhibit"  # (ssss what, who, why, mode) -> h
LOGIND_REBOOT: Final = "Reboot"  # (b interactive) -> ()
LOGIND_LIST_INHIBITORS: Final = "ListInhibitors"  # () -> a(ssssuu)

# What a firmware write must not be interrupted by: shutdown and sleep, the idle
# action, and the power/suspend/hibernate keys and the lid switch.
INHIBIT_WHAT: Final = (
    "shutdown:sleep:idle:handle-power-key:handle-suspend-key:handle-hibernate-key:handle-lid-switch"
)
INHIBIT_WHO: Final = "nhlink-dbus"
INHIBIT_WHY: Final = "Applying a firmware update"
INHIBIT_MODE_BLOCK: Final = "block"
