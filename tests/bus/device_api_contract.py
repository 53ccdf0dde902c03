"""The members issue 15 added to ``org.nerveshub.Link1`` (the newer device API):
what ``tests/bus/test_introspection.py`` expects beside DESIGN §2's."""

from __future__ import annotations

DEVICE_API_METHODS = {
    "MarkValid": "->",
    "SetHealthMetric": "sd->",
    "SetHealthCheck": "sbs->",
    "RaiseAlarm": "ss->",
    "ClearAlarm": "s->",
    "GetHealthReport": "->a{sd}a{s(bs)}a{ss}",
    "SetUpdateMode": "s->s",
}
DEVICE_API_SIGNALS = {"AutoReverted": "a{ss}"}
DEVICE_API_PROPERTIES = {
    "FirmwareValidated": ("b", "read"),
    "AutoRevertDetected": ("b", "read"),
    "UpdateMode": ("s", "read"),
    "ManagedUpdatesAllowed": ("b", "read"),
    "Extensions": ("as", "read"),
    "NetworkInterface": ("s", "read"),
}
