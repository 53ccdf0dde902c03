"""The D-Bus face of the service (dbus-next); translation only."""
