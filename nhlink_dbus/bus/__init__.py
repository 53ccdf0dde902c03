"""The D-Bus face of the service (dbus-next); translation only.

* ``interface`` — the ``org.nerveshub.Link1`` object: one dispatcher for every
  method (caller check, error mapping, fd closing), signals from the service's
  listener calls, read-only properties, documented introspection.
* ``access`` — who may call methods: uid 0 or the configured group, looked up
  from the bus daemon (the policy file in ``dbus-policy/`` says the same).
* ``info`` — plain values to ``a{sv}`` and back; no URL ever crosses the bus.
* ``server`` — :func:`~nhlink_dbus.bus.server.serve`: export, listen, own the name.
"""
