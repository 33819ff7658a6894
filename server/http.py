"""Plain HTTP on the WebSocket port, and the admission checks of the opening handshake.

``process_request`` answers health, readiness, metrics, 426 for a plain request to a
WebSocket path, 404 for anything else, and 403 for a disallowed ``Origin``.
``process_response`` admits a successful handshake only while the gateway is accepting and
below ``WS_MAX_CONNECTIONS`` (503 otherwise); the check and the reservation of a connection
slot happen in one synchronous step, so concurrent handshakes cannot overshoot the limit.

It needs the settings, the metrics (which also hold the gateway's state: ``draining`` and
``connections_active``) and a connection that can take a slot; never the gateway itself.
"""

from __future__ import annotations

import http
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from .config import Config, IPNetwork
from .logs import log_event
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics

logger = logging.getLogger(__name__)

WEBSOCKET_PATHS = frozenset({"/ws", "/"})
KNOWN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", *WEBSOCKET_PATHS})
REQUEST_ID_MAX = 128
UPGRADE_REQUIRED_BODY = (
    "426 Upgrade Required: {path} is a WebSocket endpoint.\n"
    "Connect with a WebSocket client (a GET request with 'Connection: Upgrade' and "
    "'Upgrade: websocket' headers), for example: ws://<host>:<port>{path}\n"
)


class HandshakeConnection(Protocol):
    """What the hooks read and set on a connection (``server.connection.GatewayConnection``)."""

    protocol: ServerProtocol
    conn_id: str
    peer_ip: str | None
    client: str | None
    request_id: str | None
    path: str
    answered: bool

    def respond(self, status: int, text: str) -> Response: ...

    def take_slot(self) -> None:
        """Count this connection in ``ws_connections_active`` until its TCP connection ends."""


# Bytes a handshake request may be followed by before its answer (pipelined requests, frames
# sent before the 101): held, not parsed, then fed after a 101 or dropped with the connection.
# More is a client that does not wait for its answer, and it is dropped.
EARLY_DATA_LIMIT = 64 * 1024
_HEADER_END = b"\r\n\r\n"


def request_end(buffered: bytes | bytearray, data: bytes) -> int:
    """Where in ``data`` the request header being parsed ends (after its blank line), or -1
    if it does not end in ``data``.

    ``buffered`` is what the parser holds unconsumed: the start of a line, since it takes
    whole lines, so a CRLF (the previous line's end, or nothing yet) comes before it.

    websockets parses the bytes after a handshake request as frames at once, before the
    request is answered: a pipelined second request became a protocol error whose EOF came
    before the answer, and answering then failed an assertion inside the library
    (``assert not self.eof_sent``, websockets 17.4). So the connection stops feeding the
    parser where the request ends.
    """
    tail = (b"\r\n" + bytes(buffered[-3:]))[-3:]  # the blank line may begin in an earlier read
    found = (tail + data).find(_HEADER_END)
    return -1 if found == -1 else found + len(_HEADER_END) - len(tail)


def client_address(
    peer_ip: str | None, headers: Headers, trusted: Sequence[IPNetwork]
) -> str | None:
    """The real client IP: the peer, or what a trusted proxy in front of it says.

    Only when the TCP peer is in ``trusted`` are forwarding headers believed. ``X-Real-IP``
    comes first: our NGINX sets it to the address it saw, overwriting whatever the client
    sent, so it holds even when clients themselves are in a trusted (private) range. A chain
    of proxies in front of NGINX is resolved there (its realip module), not here. Without
    ``X-Real-IP``, the right-most ``X-Forwarded-For`` entry that is not itself a trusted
    proxy is the client (entries to its left could be forged by the client).
    """
    if peer_ip is None or not trusted or not _is_trusted(peer_ip, trusted):
        return peer_ip
    real_ip = first_header(headers, "X-Real-IP").strip()
    if real_ip and _valid_ip(real_ip):
        return real_ip
    forwarded = headers.get_all("X-Forwarded-For")
    hops = [hop.strip() for value in forwarded for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _valid_ip(hop):
            break  # a malformed hop ends the chain we can trust
        if not _is_trusted(hop, trusted):
            return hop
    else:
        if hops:  # every hop is a trusted proxy: the left-most one is the origin
            return hops[0]
    return peer_ip


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(ip: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def first_header(headers: Headers, name: str) -> str:
    """The first value of header ``name``, or "" (``headers[name]`` raises on duplicates)."""
    values = headers.get_all(name)
    return values[0] if values else ""


def is_websocket_upgrade(headers: Headers) -> bool:
    return any(
        token.strip().lower() == "websocket"
        for value in headers.get_all("Upgrade")
        for token in value.split(",")
    )


def respond(connection: HandshakeConnection, status: int, body: str, content_type: str) -> Response:
    """An HTTP response with ``body`` and ``content_type``; never cached."""
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    response.headers["Cache-Control"] = "no-store"
    return response


def respond_json(connection: HandshakeConnection, status: int, payload: dict[str, Any]) -> Response:
    return respond(connection, status, json.dumps(payload) + "\n", "application/json")


class HttpEndpoints:
    """The ``process_request`` and ``process_response`` hooks of one gateway process."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        # What /metrics answers: this process's metrics, or every worker's (shared_metrics).
        self.render_metrics: Callable[[], str] = metrics.render

    def process_request(self, connection: HandshakeConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        headers = request.headers
        connection.path = path
        connection.client = client_address(connection.peer_ip, headers, self.config.trusted_proxies)
        request_id = first_header(headers, "X-Request-ID")
        if request_id:
            connection.request_id = request_id[:REQUEST_ID_MAX]

        if path in WEBSOCKET_PATHS and is_websocket_upgrade(headers):
            allowed = self.config.allowed_origins
            origins = headers.get_all("Origin")
            # No Origin header: not a browser, so not a cross-site hijacking attempt.
            if allowed and any(o.strip().lower().rstrip("/") not in allowed for o in origins):
                return self._reject(
                    connection,
                    http.HTTPStatus.FORBIDDEN,
                    "origin",
                    "Origin not allowed.\n",
                    origin=", ".join(origins),
                )
            return None  # admitted or refused for capacity in process_response

        connection.answered = True
        method = getattr(request, "method", "GET")
        if path not in KNOWN_PATHS:
            response = respond(connection, 404, "404 Not Found\n", "text/plain; charset=utf-8")
        elif method != "GET":
            response = respond(
                connection, 405, "405 Method Not Allowed: use GET\n", "text/plain; charset=utf-8"
            )
            response.headers["Allow"] = "GET"
        elif path == "/healthz":
            response = respond_json(connection, 200, self._health())
        elif path == "/readyz":
            if self.metrics.draining:
                response = respond_json(connection, 503, {"status": "draining"})
            else:
                response = respond_json(connection, 200, {"status": "ready"})
        elif path == "/metrics":
            response = respond(connection, 200, self.render_metrics(), METRICS_CONTENT_TYPE)
        else:  # a WebSocket path without Upgrade: websocket
            response = respond(
                connection,
                426,
                UPGRADE_REQUIRED_BODY.format(path=path),
                "text/plain; charset=utf-8",
            )
            response.headers["Upgrade"] = "websocket"
        status = response.status_code
        self.metrics.count_http(path if path in KNOWN_PATHS else "other", status)
        log_event(
            logger,
            logging.DEBUG if status < 400 else logging.INFO,
            "http_request",
            method=method,
            path=path,
            status=status,
            client=connection.client,
            request_id=connection.request_id,
        )
        return response

    def process_response(
        self, connection: HandshakeConnection, request: Request, response: Response
    ) -> Response | None:
        if response.status_code == http.HTTPStatus.SWITCHING_PROTOCOLS:
            if self.metrics.draining:
                return self._reject(
                    connection,
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    "draining",
                    "Server is shutting down.\n",
                )
            if self.metrics.connections_active >= self.config.max_connections:
                return self._reject(
                    connection,
                    http.HTTPStatus.SERVICE_UNAVAILABLE,
                    "max_connections",
                    "Too many connections; try again later.\n",
                )
            connection.take_slot()
            return None
        if not connection.answered:
            # The library refused the handshake itself (bad key, version, method...).
            connection.answered = True
            exc = connection.protocol.handshake_exc
            self.metrics.count_rejection("invalid_handshake")
            log_event(
                logger,
                logging.WARNING,
                "handshake_failed",
                conn=connection.conn_id,
                client=connection.client,
                path=connection.path,
                status=response.status_code,
                error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
                request_id=connection.request_id,
            )
        return None

    def _reject(
        self,
        connection: HandshakeConnection,
        status: http.HTTPStatus,
        reason: str,
        body: str,
        **fields: Any,
    ) -> Response:
        connection.answered = True
        self.metrics.count_rejection(reason)
        log_event(
            logger,
            logging.WARNING,
            "handshake_rejected",
            conn=connection.conn_id,
            client=connection.client,
            path=connection.path,
            status=int(status),
            reason=reason,
            request_id=connection.request_id,
            **fields,
        )
        response = respond(connection, status, body, "text/plain; charset=utf-8")
        if status == http.HTTPStatus.SERVICE_UNAVAILABLE:
            response.headers["Retry-After"] = "1"
        return response

    def _health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "uptime_s": round(time.time() - self.metrics.start_time, 3),
            "connections": self.metrics.connections_active,
            "draining": self.metrics.draining,
        }
