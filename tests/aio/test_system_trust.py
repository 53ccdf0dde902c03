"""The downloader's system trust store: a hashed CA directory that holds what the
bundle holds is looked up when a handshake needs it (nothing parsed up front) and is
trusted exactly as the certificates it holds; otherwise OpenSSL's defaults. The trust
store is made for ``https://`` URLs only."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from nhlink_dbus.aio import downloader
from nhlink_dbus.aio.downloader import _hashed_trust_dir, download, system_trust_context
from nhlink_dbus.aio.http_transport import FirmwareTransport
from nhlink_dbus.core.download_policy import RetryPolicy
from nhlink_dbus.errors import DownloadError
from nhlink_devtools.hubsim import HubSim, HubSimConfig
from nhlink_devtools.hubsim.certs import generate_ca
from tests.harness.sinks import MemorySink

ONE_TRY = RetryPolicy(idle_timeout_ms=5000, time_between_retries_ms=10, max_disconnects=1)
BUNDLE = "ca-certificates.crt"


def paths(capath: Path | None, cafile: Path | None = None) -> ssl.DefaultVerifyPaths:
    real = ssl.get_default_verify_paths()
    if cafile is None and capath is not None:
        cafile = capath / BUNDLE
    return ssl.DefaultVerifyPaths(
        str(cafile) if cafile is not None else None,
        str(capath) if capath is not None else None,
        real.openssl_cafile_env,
        real.openssl_cafile,
        real.openssl_capath_env,
        real.openssl_capath,
    )


def hashed_dir(folder: Path, *certs: Path) -> Path:
    """A CA directory as update-ca-certificates leaves it: ``<subject hash>.0`` links
    and the bundle of the same certificates, written last."""
    folder.mkdir()
    for cert in certs:
        digest = subprocess.run(
            ["openssl", "x509", "-hash", "-noout", "-in", str(cert)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        (folder / f"{digest}.0").symlink_to(cert)
    (folder / BUNDLE).write_bytes(b"".join(cert.read_bytes() for cert in certs))
    same_time(folder)
    return folder


def same_time(folder: Path) -> None:
    stamp = os.stat(folder).st_mtime_ns
    os.utime(folder / BUNDLE, ns=(stamp, stamp))


def test_the_directory_stands_for_the_bundle_only_when_it_holds_the_same(tmp_path: Path) -> None:
    cas = [Path(generate_ca(tmp_path / "cas", f"ca{i}").cert) for i in range(2)]
    good = hashed_dir(tmp_path / "good", *cas)
    assert _hashed_trust_dir(paths(good), {}) == str(good)
    # A CA appended to the bundle by hand (the bundle is newer, and holds one more).
    appended = hashed_dir(tmp_path / "appended", *cas)
    with (appended / BUNDLE).open("ab") as fh:
        fh.write(Path(generate_ca(tmp_path / "cas", "extra").cert).read_bytes())
    os.utime(appended / BUNDLE, ns=(1, os.stat(appended).st_mtime_ns + 10**9))
    assert _hashed_trust_dir(paths(appended), {}) == ""
    same_time(appended)  # the same time: the count still differs
    assert _hashed_trust_dir(paths(appended), {}) == ""
    # A link fewer than the bundle's certificates.
    fewer = hashed_dir(tmp_path / "fewer", *cas)
    next(fewer.glob("*.0")).unlink()
    same_time(fewer)
    assert _hashed_trust_dir(paths(fewer), {}) == ""
    # The bundle elsewhere, none, no hashed names, no directory.
    assert _hashed_trust_dir(paths(good, tmp_path / "appended" / BUNDLE), {}) == ""
    assert _hashed_trust_dir(paths(good, good / "missing.crt"), {}) == ""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / BUNDLE).write_bytes(b"")
    (plain / "README").write_text("")
    same_time(plain)
    assert _hashed_trust_dir(paths(plain), {}) == ""
    assert _hashed_trust_dir(paths(tmp_path / "missing"), {}) == ""
    assert _hashed_trust_dir(paths(None), {}) == ""
    # SSL_CERT_FILE or SSL_CERT_DIR, even empty (OpenSSL then loads nothing): its defaults.
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        assert _hashed_trust_dir(paths(good), {name: "/x"}) == ""
        assert _hashed_trust_dir(paths(good), {name: ""}) == ""


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
        sink = MemorySink()
        await download(url, sink, ONE_TRY, verify=context)
        assert bytes(sink.data) == data
        assert context.cert_store_stats()["x509_ca"] == 1  # looked up by the handshake

        # Another CA alone in the directory: the simulator's certificate is refused.
        stranger = generate_ca(tmp_path / "stranger", "stranger")
        untrusted = hashed_dir(tmp_path / "certs2", Path(stranger.cert))
        context = system_trust_context(paths(untrusted), {})
        with pytest.raises(DownloadError, match=r"^max_disconnects_reached$"):
            await download(url, MemorySink(), ONE_TRY, verify=context)
        async with httpx.AsyncClient(transport=FirmwareTransport(context)) as client:
            with pytest.raises(httpx.ConnectError) as refused:
                await client.get(url)
        assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)


async def test_the_trust_store_is_made_once_and_only_for_https(tmp_path: Path) -> None:
    """The transport makes its TLS context when the first ``https://`` URL needs it; a
    plain HTTP download never makes one, nor does the default client's warm-up."""
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

        # The downloader's own client and warm-up: the system's trust only for https.
        downloader.system_tls_context.cache_clear()
        downloader.warm_up(url)
        sink = MemorySink()
        await download(url, sink, ONE_TRY)
        assert bytes(sink.data) == data
        assert downloader.system_tls_context.cache_info().currsize == 0
        downloader.warm_up(url.replace("http://", "https://"))
        assert downloader.system_tls_context.cache_info().currsize == 1
