"""The downloader's system trust store: a hashed CA directory is looked up when a
handshake needs it (nothing parsed up front), and it is trusted exactly as the
certificates it holds; without one, OpenSSL's defaults."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from nhlink_dbus.aio.downloader import _hashed_trust_dir, download, system_trust_context
from nhlink_dbus.aio.http_transport import FirmwareTransport
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.errors import DownloadError
from nhlink_devtools.hubsim import HubSim, HubSimConfig
from nhlink_devtools.hubsim.certs import generate_ca

ONE_TRY = RetryPolicy(idle_timeout_ms=5000, time_between_retries_ms=10, max_disconnects=1)


def paths(
    capath: Path | None, real: ssl.DefaultVerifyPaths | None = None
) -> ssl.DefaultVerifyPaths:
    real = real or ssl.get_default_verify_paths()
    return ssl.DefaultVerifyPaths(
        real.cafile,
        str(capath) if capath is not None else None,
        real.openssl_cafile_env,
        real.openssl_cafile,
        real.openssl_capath_env,
        real.openssl_capath,
    )


def hashed_dir(folder: Path, *certs: Path) -> Path:
    """A CA directory as update-ca-certificates leaves it: ``<subject hash>.0`` links."""
    folder.mkdir()
    for cert in certs:
        digest = subprocess.run(
            ["openssl", "x509", "-hash", "-noout", "-in", str(cert)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        (folder / f"{digest}.0").symlink_to(cert)
    return folder


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        self.data += chunk

    async def restart(self) -> None:
        self.data.clear()


def test_the_hashed_directory_is_used_only_when_it_holds_hashed_names(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "ca-certificates.crt").write_text("")
    (other / "README").write_text("")
    hashed = tmp_path / "hashed"
    hashed.mkdir()
    (hashed / "README").write_text("")
    (hashed / "9d2f71b3.0").write_text("")
    assert _hashed_trust_dir(paths(hashed), {}) == str(hashed)
    assert _hashed_trust_dir(paths(empty), {}) == ""
    assert _hashed_trust_dir(paths(other), {}) == ""
    assert _hashed_trust_dir(paths(tmp_path / "missing"), {}) == ""
    assert _hashed_trust_dir(paths(None), {}) == ""
    # An administrator's SSL_CERT_FILE or SSL_CERT_DIR: OpenSSL's defaults, which read them.
    assert _hashed_trust_dir(paths(hashed), {"SSL_CERT_FILE": "/x.pem"}) == ""
    assert _hashed_trust_dir(paths(hashed), {"SSL_CERT_DIR": "/x"}) == ""
    assert _hashed_trust_dir(paths(hashed), {"SSL_CERT_DIR": ""}) == str(hashed)


def test_without_a_hashed_directory_the_defaults_are_loaded(tmp_path: Path) -> None:
    context = system_trust_context(paths(tmp_path / "missing"), {})
    default = ssl.create_default_context()
    assert context.cert_store_stats() == default.cert_store_stats()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


async def test_a_ca_in_the_hashed_directory_is_trusted_when_needed(tmp_path: Path) -> None:
    async with HubSim(HubSimConfig(http_tls=True, cert_dir=tmp_path / "pki")) as tls:
        assert tls.pki is not None
        data = os.urandom(300_000)
        url = tls.add_file(data, "/firmware/x.fw")
        trusted = hashed_dir(tmp_path / "certs", Path(tls.pki.ca.cert))
        context = system_trust_context(paths(trusted), {})
        assert context.cert_store_stats()["x509_ca"] == 0  # nothing parsed up front
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        sink = Sink()
        await download(url, sink, ONE_TRY, verify=context)
        assert bytes(sink.data) == data
        assert context.cert_store_stats()["x509_ca"] == 1  # looked up by the handshake

        # Another CA alone in the directory: the simulator's certificate is refused.
        stranger = generate_ca(tmp_path / "stranger", "stranger")
        untrusted = hashed_dir(tmp_path / "certs2", Path(stranger.cert))
        with pytest.raises(DownloadError, match=r"^max_disconnects_reached$"):
            await download(url, Sink(), ONE_TRY, verify=system_trust_context(paths(untrusted), {}))


async def test_the_trust_store_is_made_once_and_only_for_https(tmp_path: Path) -> None:
    """The transport makes its TLS context when the first ``https://`` URL needs it; a
    plain HTTP download never makes one."""
    made: list[ssl.SSLContext] = []

    async with HubSim(HubSimConfig(http_tls=True, cert_dir=tmp_path / "pki")) as tls:
        assert tls.pki is not None
        ca = str(tls.pki.ca.cert)

        def make() -> ssl.SSLContext:
            made.append(ssl.create_default_context(cafile=ca))
            return made[-1]

        transport = FirmwareTransport(make)
        data = os.urandom(100_000)
        url = tls.add_file(data, "/firmware/x.fw")
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(2):
                assert (await client.get(url)).content == data
        assert len(made) == 1

    async with HubSim() as plain:
        url = plain.add_file(data, "/firmware/x.fw")
        assert url.startswith("http://")
        transport = FirmwareTransport(lambda: pytest.fail("a TLS context for plain HTTP"))
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(url)).content == data
