"""What docs/security.md says NGINX enforces, checked on a running stack: the security
headers, no directory listing, the body and header size limits, and proxy timeouts of at
least 60 s in the configuration NGINX runs with the shipped defaults."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from stack.waits import seconds
from stack.wire.handshake import answer_head

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
DURATION = re.compile(r"(\d+)(ms|s|m|h|d)?")
UNIT_SECONDS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``: (status, headers, body), for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=seconds(10)) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_answer(stack, request: bytes) -> bytes:
    """Send ``request`` to NGINX's published port; its answer's head, or b"" if it closed."""
    return answer_head((stack.host, stack.port), request, seconds(10))


def running_configuration(stack) -> str:
    """`nginx -T` of the configuration NGINX runs: every file, as rendered."""
    code, out = stack.nginx.exec(["nginx", "-T", "-q", "-c", "/tmp/nginx/nginx.conf"])
    assert code == 0, out
    return out


def test_answers_carry_the_security_headers(stack) -> None:
    """NGINX's own answers (404, 426) carry the security headers docs/security.md lists."""
    for path in ("/no-such-path", "/ws"):
        status, headers, _ = get(f"{stack.http}{path}")
        assert status in (404, 426), path
        shown = {name: headers.get(name) for name in SECURITY_HEADERS}
        assert shown == SECURITY_HEADERS, path


def test_no_directory_listing(stack) -> None:
    """`autoindex off` is in force, and a directory path is 404, never a listing."""
    assert re.search(r"^\s*autoindex off;", running_configuration(stack), re.M)
    for path in ("/", "/ws/", "/snippets/"):
        status, _, body = get(f"{stack.http}{path}")
        assert status == 404, path
        assert b"Index of" not in body


def test_a_request_body_over_1_kib_is_413(stack) -> None:
    """client_max_body_size 1k: a handshake has no body, a 2 KiB one is refused."""
    body = b"x" * 2048
    request = (
        b"POST /ws HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    assert raw_answer(stack, request).startswith(b"HTTP/1.1 413 ")


def test_a_header_over_8_kib_is_400(stack) -> None:
    """large_client_header_buffers 4 8k: one header line longer than 8 KiB is refused."""
    request = (
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"y" * 9000 + b"\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = raw_answer(stack, request)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]


def test_shipped_proxy_timeouts_are_at_least_60_s(stack) -> None:
    """The seed asks for proxy timeouts of 60 s or more: what NGINX runs with by default."""
    config = running_configuration(stack)
    for directive in ("proxy_read_timeout", "proxy_send_timeout"):
        values = re.findall(rf"^\s*{directive}\s+(\S+);", config, re.M)
        assert values, directive
        for value in values:
            number, unit = DURATION.fullmatch(value).groups()
            assert int(number) * UNIT_SECONDS[unit] >= 60, (directive, value)
