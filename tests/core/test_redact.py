"""core.redact: one rule for every URL and every text that leaves the process."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nhlink_dbus.core.redact import PLACEHOLDER, redact_text, redact_url, starts_with_url

# RFC 3986 §2.2-2.3 and §3.2.1, 3.3, 3.4: what each part may hold unencoded.
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
SUB_DELIMS = "!$&'()*+,;="
USERINFO = UNRESERVED + SUB_DELIMS + ":%"
PCHAR = UNRESERVED + SUB_DELIMS + ":@%"
QUERY = PCHAR + "/?"

schemes = st.from_regex(r"[A-Za-z][A-Za-z0-9+.-]{0,8}", fullmatch=True)
secrets = st.from_regex(r"[A-Za-z0-9]{10,16}", fullmatch=True)
hosts = st.one_of(
    st.just(""),
    st.from_regex(r"[A-Za-z0-9-]{1,12}(\.[A-Za-z0-9-]{1,12}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
    st.just("[fe80::1%25eth0]"),
    # broken brackets and bracketed non-addresses
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}"),
    st.ip_addresses(v=6).map(lambda ip: f"{ip}]"),
    st.sampled_from(["[", "]", "[]", "[::1]]", "[[::1]", "[not-an-ip]", "[v1.x]", "a[::1]"]),
)
ports = st.one_of(
    st.just(""),
    st.integers(0, 70_000).map(lambda port: f":{port}"),
    st.sampled_from([":", ":notaport", ":-1", ":8o"]),
)
paths = st.lists(st.text(PCHAR, max_size=8), max_size=4).map(
    lambda segments: "".join("/" + segment for segment in segments)
)


def around(alphabet: str, secret: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``secret`` with any characters of ``alphabet`` before and after it."""
    return st.tuples(st.text(alphabet, max_size=6), secret, st.text(alphabet, max_size=6)).map(
        "".join
    )


@st.composite
def signed_urls(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """(url, what may stay of it, the secrets in it): any scheme and host, maybe user
    info, always a query, maybe a fragment."""
    scheme, host, port, path = draw(schemes), draw(hosts), draw(ports), draw(paths)
    hidden: list[str] = []
    userinfo = ""
    if draw(st.booleans()):
        password = draw(secrets)
        hidden.append(password)
        user = draw(st.text(UNRESERVED, max_size=6))
        userinfo = f"{user}:{draw(around(USERINFO, st.just(password)))}@"
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        value = draw(secrets)
        hidden.append(value)
        key = draw(st.text(PCHAR.replace("&", "").replace("=", ""), max_size=6))
        pairs.append(f"{key}={draw(around(QUERY, st.just(value)))}")
    fragment = ""
    if draw(st.booleans()):
        value = draw(secrets)
        hidden.append(value)
        fragment = "#" + draw(around(QUERY, st.just(value)))
    url = f"{scheme}://{userinfo}{host}{port}{path}?{'&'.join(pairs)}{fragment}"
    return url, f"{scheme}://{host}{port}{path}", hidden


@given(signed_urls(), st.text(), st.text())
def test_no_query_value_or_password_survives_in_text(
    signed: tuple[str, str, list[str]], before: str, after: str
) -> None:
    url, visible, hidden = signed
    text = before + url + after
    redacted = redact_text(text)
    kept = (before + visible + after).lower()
    for secret in hidden:
        if secret.lower() not in kept:  # else it is there by chance, not as a leak
            assert secret not in redacted
    assert redact_text(redacted) == redacted


@given(signed_urls())
def test_no_query_value_or_password_survives_in_a_url(signed: tuple[str, str, list[str]]) -> None:
    url, visible, hidden = signed
    redacted = redact_url(url)
    for secret in hidden:
        if secret.lower() not in visible.lower():
            assert secret not in redacted
    assert "?" not in redacted and "#" not in redacted
    assert redact_url(redacted) == redacted
    assert redact_text(redacted) == redacted


@given(st.text())
def test_anything_in_gives_a_fixed_point_out(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once
    url = redact_url(text)
    assert redact_url(url) == url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://[::1/x", PLACEHOLDER),  # core.hub_settings.loggable_url used to raise
        ("https://h:notaport/x?sig=1", PLACEHOLDER),
        ("https://h:70000/x", PLACEHOLDER),
        (
            "wss://u:p@h:4001/device-socket/websocket?vsn=2.0.0&sig=x",
            "wss://h:4001/device-socket/websocket",
        ),
        ("wss://[::1]:4000/socket?x=1", "wss://[::1]:4000/socket"),
        ("https://[::1]/fw.fw?X-Amz-Signature=s", "https://[::1]/fw.fw"),
        ("http://u:pw@H.Example:8080/p?q=1#frag", "http://h.example:8080/p"),
        ("HTTPS://files.example.com/firmware/x.fw#part", "https://files.example.com/firmware/x.fw"),
        ("https://h", "https://h"),
        ("https://", "https://"),
        ("file:///var/lib/x?y", "file:///var/lib/x"),
        ("https://a/x/https://u:pw@b/y?z", "https://a/x/https://b/y"),
        # no scheme: the hub URL may be a bare host; a Location may be relative
        ("hub.example.com", "hub.example.com"),
        ("u:pw@hub.example.com:4001/x?y", "hub.example.com:4001/x"),
        ("/cdn/x.fw?token=t", "/cdn/x.fw"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "connect wss://h:4001/device-socket/websocket?token=T&vsn=2.0.0 failed",
            "connect wss://h:4001/device-socket/websocket failed",
        ),
        (
            "GET https://u:p@h.example:8443/a/b.fw?sig=1#f failed",
            "GET https://h.example:8443/a/b.fw failed",
        ),
        ("a https://[::1/x?sig=1 b", f"a {PLACEHOLDER} b"),
        ("s3://bucket/key?X-Amz-Signature=s, ftp://u:pw@h/f", "s3://bucket/key ftp://h/f"),
        (
            '{"firmware_url":"http://127.0.0.1:1/firmware/x.fw?X-Amz-Signature=s","size":1}',
            '{"firmware_url":"http://127.0.0.1:1/firmware/x.fw","size":1}',
        ),
        ("<https://h/x?sig=1>", "<https://h/x>"),
        ("url='https://h/x?sig=1'", "url='https://h/x"),  # a ' may be part of a query
        ("no url here, just 'quotes' and a?query", "no url here, just 'quotes' and a?query"),
        ("", ""),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://s3/x?X-Amz-Signature=1", True),
        (" HTTPS://h", True),
        ("s3://b/k", True),
        ("see https://h/x", False),
        ("hub.example.com", False),
        ("mailto:a@b", False),
    ],
)
def test_starts_with_url(value: str, expected: bool) -> None:
    assert starts_with_url(value) is expected
