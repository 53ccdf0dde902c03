"""The bus fixtures (tests/bus/conftest.py) for the security tests: the fake service
on the private system bus and a throw-away member of group ``nhlink``."""

from tests.bus.conftest import face, nhlink_member, service

__all__ = ["face", "nhlink_member", "service"]
