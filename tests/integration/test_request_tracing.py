"""Request ids and client addresses: what NGINX forwards reaches the server's log."""

from __future__ import annotations

import json
import uuid

from websockets.sync.client import connect

from stack.waits import until


def test_request_id_from_the_client_reaches_the_server_log(stack) -> None:
    """An X-Request-ID sent to NGINX is forwarded and logged by the server on connect."""
    request_id = uuid.uuid4().hex
    with connect(stack.url, additional_headers={"X-Request-ID": request_id}) as ws:
        ws.send("traced")
        assert ws.recv(timeout=10) == "traced"
    until(lambda: request_id in stack.server.logs(), "request id in the server log", 15)


def test_nginx_makes_a_request_id_when_the_client_sends_none(stack) -> None:
    """Without a client X-Request-ID, NGINX sends its own and returns it in the handshake."""
    with connect(stack.url) as ws:
        request_id = ws.response.headers.get("X-Request-ID")
        ws.send("traced")
        assert ws.recv(timeout=10) == "traced"
    assert request_id and len(request_id) >= 16
    until(lambda: request_id in stack.server.logs(), "generated request id in the server log", 15)


def test_connection_log_names_the_real_client_not_the_proxy(stack) -> None:
    """Behind NGINX the server logs the client's address (X-Forwarded-For), not NGINX's."""
    request_id = uuid.uuid4().hex
    with connect(stack.url, additional_headers={"X-Request-ID": request_id}) as ws:
        ws.send("who am i")
        ws.recv(timeout=10)
    nginx_backend_ip = stack.nginx.ip(stack.backend)

    def opened() -> list[dict]:
        return [e for e in stack.server.events() if request_id in json.dumps(e)]

    events = until(opened, "connection line with the request id", 15)
    opened_event = events[0]
    assert opened_event["peer"].startswith(nginx_backend_ip)  # the TCP peer is NGINX ...
    assert (
        opened_event["client"] and opened_event["client"] != nginx_backend_ip
    )  # ... not the client
