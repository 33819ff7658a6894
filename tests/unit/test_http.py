"""Plain HTTP on the WebSocket port, and the admission checks of the handshake."""

from __future__ import annotations

import asyncio
import logging

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.app import Gateway
from server.http import client_address
from server.metrics import CONTENT_TYPE

from .conftest import LogEvents
from .helpers import get_json, http_request, metric, running_gateway, units, wait_until

pytestmark = pytest.mark.unit


async def test_healthz_is_200_json(gateway: Gateway):
    """/healthz answers 200 with a JSON status while the process is alive."""
    status, body = await get_json(gateway.port, "/healthz")
    assert status == 200
    assert body["status"] == "ok" and body["connections"] == 0 and body["draining"] is False


async def test_readyz_is_200_while_accepting(gateway: Gateway):
    """/readyz answers 200 while the gateway accepts connections."""
    assert await get_json(gateway.port, "/readyz") == (200, {"status": "ready"})


async def test_metrics_exposition(gateway: Gateway):
    """/metrics is Prometheus text with connections, messages, bytes, closes and sizes."""
    async with connect(gateway.url) as ws:
        await ws.send("hello")
        await ws.recv()
        await ws.send(b"\x00" * 300)
        await ws.recv()
        status, headers, body = await http_request(gateway.port, "/metrics")
        assert status == 200 and headers["content-type"] == CONTENT_TYPE
        text = body.decode()
        assert metric(text, "ws_connections_active") == 1
    await wait_until(lambda: gateway.metrics.closes)
    _, _, body = await http_request(gateway.port, "/metrics")
    text = body.decode()
    assert metric(text, "ws_connections_active") == 0
    assert metric(text, "ws_connections_total") == 1
    assert metric(text, "ws_messages_total", type="text", direction="in") == 1
    assert metric(text, "ws_messages_total", type="binary", direction="out") == 1
    assert metric(text, "ws_message_bytes_total", type="text", direction="out") == 5
    assert metric(text, "ws_message_bytes_total", type="binary", direction="in") == 300
    assert metric(text, "ws_closes_total", code="1000") == 1
    assert metric(text, "ws_message_size_bytes_bucket", le="64") == 1
    assert metric(text, "ws_message_size_bytes_bucket", le="256") == 1
    assert metric(text, "ws_message_size_bytes_bucket", le="1024") == 2
    assert metric(text, "ws_message_size_bytes_bucket", le="+Inf") == 2
    assert metric(text, "ws_message_size_bytes_sum") == 305
    assert metric(text, "ws_http_responses_total", path="/metrics", code="200") == 1
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if not line.startswith("#"):
            float(line.rpartition(" ")[2])


@pytest.mark.parametrize("path", ["/ws", "/", "/ws?x=1"])
async def test_plain_request_to_websocket_path_is_426(gateway: Gateway, path):
    """A plain GET on a WebSocket path gets 426 Upgrade Required and says what to do."""
    status, headers, body = await http_request(gateway.port, path)
    assert status == 426
    assert headers["upgrade"] == "websocket"
    assert b"WebSocket endpoint" in body and b"WebSocket client" in body


@pytest.mark.parametrize("path", ["/nope", "/ws/extra", "/healthz/x"])
async def test_unknown_path_is_404(gateway: Gateway, path):
    """Anything else is 404."""
    assert (await http_request(gateway.port, path))[0] == 404


async def test_websocket_on_unknown_path_is_404(gateway: Gateway):
    """A WebSocket handshake on an unknown path is refused with 404."""
    with pytest.raises(InvalidStatus) as raised:
        await connect(gateway.url.replace("/ws", "/other"))
    assert raised.value.response.status_code == 404


async def test_non_get_is_405(gateway: Gateway):
    """Other methods on the known paths get 405 with Allow: GET."""
    status, headers, _ = await http_request(gateway.port, "/healthz", method="POST")
    assert status == 405 and headers["allow"] == "GET"


async def test_disallowed_origin_is_403_and_allowed_origin_connects(log_events: LogEvents):
    """With WS_ALLOWED_ORIGINS, another Origin gets 403; a listed one or none connects."""
    async with running_gateway(WS_ALLOWED_ORIGINS="https://app.example, https://b.example/") as gw:
        with pytest.raises(InvalidStatus) as raised:
            await connect(gw.url, origin="https://evil.example")
        assert raised.value.response.status_code == 403
        for origin in ("https://app.example", "HTTPS://B.EXAMPLE", None):
            async with connect(gw.url, origin=origin) as ws:
                await ws.send("ok")
                assert await ws.recv() == "ok"
        rejected = log_events.one("handshake_rejected")
        assert (rejected["status"], rejected["reason"]) == (403, "origin")
        assert rejected["origin"] == "https://evil.example"
        assert gw.metrics.rejections == {"origin": 1}


async def test_max_connections_refuses_with_503_and_frees_slots():
    """Beyond WS_MAX_CONNECTIONS a handshake gets 503; a closed connection frees its slot."""
    async with running_gateway(WS_MAX_CONNECTIONS="2") as gw:
        first = await connect(gw.url)
        second = await connect(gw.url)
        with pytest.raises(InvalidStatus) as raised:
            await connect(gw.url)
        assert raised.value.response.status_code == 503
        await first.close()
        await wait_until(lambda: gw.metrics.connections_active == 1)
        async with connect(gw.url) as third:
            await third.send("in")
            assert await third.recv() == "in"
        await second.close()
        assert gw.metrics.rejections == {"max_connections": 1}


async def test_concurrent_handshakes_never_exceed_max_connections():
    """50 simultaneous handshakes against a limit of 10: exactly 10 get in."""
    async with running_gateway(WS_MAX_CONNECTIONS="10") as gw:
        results = await asyncio.gather(
            *(connect(gw.url) for _ in range(50)), return_exceptions=True
        )
        accepted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, InvalidStatus)]
        assert (len(accepted), len(refused)) == (10, 40)
        assert gw.metrics.connections_active == 10
        await asyncio.gather(*(ws.close() for ws in accepted))
        await wait_until(lambda: gw.metrics.connections_active == 0)


async def test_invalid_handshake_is_logged_once_without_traceback(
    gateway: Gateway, log_events: LogEvents
):
    """A broken WebSocket handshake gets the library's 4xx and one warning line of ours."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    status, _, _ = await http_request(gateway.port, "/ws", headers=headers)  # no key
    assert status == 400
    failed = await wait_until(lambda: log_events("handshake_failed"))
    assert failed[0]["level"] == "WARNING" and "Sec-WebSocket-Key" in failed[0]["error"]
    assert all(r.exc_info is None for r in log_events.caplog.records)
    assert gateway.metrics.rejections == {"invalid_handshake": 1}


async def test_garbage_instead_of_http_is_logged_and_dropped(
    gateway: Gateway, log_events: LogEvents
):
    """Bytes that are not HTTP are dropped with one warning; an empty probe is only DEBUG."""
    log_events.caplog.set_level(logging.DEBUG, logger="server")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    async with asyncio.timeout(units(5)):
        assert await reader.read() == b""
    writer.close()
    (failed,) = await wait_until(lambda: log_events("handshake_failed"))
    assert failed["level"] == "WARNING" and "InvalidMessage" in failed["error"]
    _, probe = await asyncio.open_connection("127.0.0.1", gateway.port)
    probe.close()
    _, probed = await wait_until(
        lambda: len(log_events("handshake_failed")) == 2 and log_events("handshake_failed")
    )
    assert probed["level"] == "DEBUG"
    assert gateway.metrics.rejections == {"invalid_request": 1}


async def test_connection_log_has_client_path_and_request_id(
    gateway: Gateway, log_events: LogEvents
):
    """connection_open and connection_closed carry the id, client, path and X-Request-ID."""
    async with connect(gateway.url, additional_headers={"X-Request-ID": "req-42"}) as ws:
        await ws.send("a\nfake line")
        await ws.recv()
    (closed,) = await wait_until(lambda: log_events("connection_closed"))
    opened = log_events.one("connection_open")
    assert opened["conn"] == closed["conn"] and len(opened["conn"]) == 8
    assert (opened["client"], opened["path"], opened["request_id"]) == (
        "127.0.0.1",
        "/ws",
        "req-42",
    )
    assert opened["peer"].startswith("127.0.0.1:")
    assert closed["request_id"] == "req-42"
    assert (closed["code"], closed["closed_by"], closed["level"]) == (1000, "client", "INFO")
    assert (closed["msgs_in"], closed["msgs_out"], closed["bytes_in"], closed["bytes_out"]) == (
        1,
        1,
        11,
        11,
    )
    echoed = log_events.one("message_echoed")
    assert (echoed["preview"], echoed["type"], echoed["size"], echoed["seq"]) == (
        "a\\nfake line",
        "text",
        11,
        1,
    )
    assert not log_events("message_received")  # one line per message, once echoed


async def test_message_logs_can_be_switched_off(log_events: LogEvents):
    """WS_LOG_MESSAGES=false keeps lifecycle lines and drops per-message lines."""
    async with running_gateway(WS_LOG_MESSAGES="false") as gw, connect(gw.url) as ws:
        await ws.send("quiet")
        assert await ws.recv() == "quiet"
    assert log_events("connection_open")
    assert not log_events("message_received") and not log_events("message_echoed")


async def test_trusted_proxy_headers_give_the_real_client(log_events: LogEvents):
    """From a trusted proxy, the real client comes from X-Real-IP, else X-Forwarded-For."""
    async with running_gateway(WS_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8") as gw:
        # A client in a trusted (private) range forging X-Forwarded-For: NGINX appended the
        # real address and overwrote X-Real-IP with it, so the forgery is not believed.
        forged = {"X-Forwarded-For": "198.51.100.7, 10.1.2.3", "X-Real-IP": "10.1.2.3"}
        async with connect(gw.url, additional_headers=forged):
            pass
        async with connect(gw.url, additional_headers={"X-Real-IP": "203.0.113.9"}):
            pass
        async with connect(gw.url, additional_headers={"X-Forwarded-For": "198.51.100.8"}):
            pass
    clients = [e["client"] for e in log_events("connection_open")]
    assert clients == ["10.1.2.3", "203.0.113.9", "198.51.100.8"]


async def test_untrusted_peer_cannot_spoof_client(gateway: Gateway, log_events: LogEvents):
    """Without WS_TRUSTED_PROXIES, forwarding headers are ignored."""
    async with connect(gateway.url, additional_headers={"X-Forwarded-For": "1.2.3.4"}):
        pass
    assert log_events.one("connection_open")["client"] == "127.0.0.1"


def headers_of(**values: str):
    from websockets.datastructures import Headers

    return Headers([(k.replace("_", "-"), v) for k, v in values.items()])


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("10.0.0.1", {"X_Forwarded_For": "1.1.1.1, 2.2.2.2"}, "2.2.2.2"),
        ("10.0.0.1", {"X_Forwarded_For": "1.1.1.1, 10.0.0.5"}, "1.1.1.1"),
        ("10.0.0.1", {"X_Forwarded_For": "10.0.0.9, 10.0.0.5"}, "10.0.0.9"),
        ("10.0.0.1", {"X_Forwarded_For": "1.1.1.1, garbage"}, "10.0.0.1"),
        ("10.0.0.1", {"X_Forwarded_For": "garbage", "X_Real_IP": "3.3.3.3"}, "3.3.3.3"),
        ("10.0.0.1", {"X_Forwarded_For": "1.2.3.4, 10.9.9.9", "X_Real_IP": "10.9.9.9"}, "10.9.9.9"),
        ("10.0.0.1", {"X_Real_IP": "not-an-ip"}, "10.0.0.1"),
        ("10.0.0.1", {}, "10.0.0.1"),
        ("192.0.2.1", {"X_Forwarded_For": "1.1.1.1"}, "192.0.2.1"),
        ("::ffff:10.0.0.1", {"X_Real_IP": "2001:db8::1"}, "2001:db8::1"),
        ("nonsense", {"X_Real_IP": "3.3.3.3"}, "nonsense"),
    ],
)
def test_client_address_rules(peer, headers, expected):
    """Only a trusted peer's headers count: X-Real-IP, else the right-most untrusted hop."""
    import ipaddress

    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client_address(peer, headers_of(**headers), trusted) == expected


def test_client_address_without_peer_or_trust():
    """No peer address stays None; an empty trust list returns the peer untouched."""
    assert client_address(None, headers_of(X_Real_IP="1.1.1.1"), ()) is None
    assert client_address("10.0.0.1", headers_of(X_Real_IP="1.1.1.1"), ()) == "10.0.0.1"


async def test_application_close_codes_make_one_series_per_range(gateway: Gateway):
    """Close codes 3000-4999 chosen by clients count as 3xxx and 4xxx, not a series each."""
    for code in (3000, 3999, 4000, 4001, 4999):
        async with connect(gateway.url) as ws:
            await ws.close(code)
    await wait_until(lambda: sum(gateway.metrics.closes.values()) == 5)
    assert gateway.metrics.closes == {3000: 2, 4000: 3}
    _, _, body = await http_request(gateway.port, "/metrics")
    text = body.decode()
    assert metric(text, "ws_closes_total", code="3xxx") == 2
    assert metric(text, "ws_closes_total", code="4xxx") == 3
    assert 'code="4001"' not in text


async def test_most_connections_from_one_client_is_a_gauge(gateway: Gateway):
    """ws_client_connections_max counts the open WebSockets of the busiest client address."""
    async with connect(gateway.url), connect(gateway.url), connect(gateway.url):
        await wait_until(lambda: gateway.metrics.connections_active == 3)
        _, _, body = await http_request(gateway.port, "/metrics")
        assert metric(body.decode(), "ws_client_connections_max") == 3
    await wait_until(lambda: not gateway.metrics.client_connections, what="all three gone")
    _, _, body = await http_request(gateway.port, "/metrics")
    assert metric(body.decode(), "ws_client_connections_max") == 0
