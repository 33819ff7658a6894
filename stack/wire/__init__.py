"""The client side of the WebSocket wire, written once (RFC 6455).

* ``frames``: opcodes, masking, encoding and decoding frames, close payloads;
* ``handshake``: the opening request and the check of the server's 101 answer;
* ``raw``: a WebSocket on a bare TCP stream, for frames a client library refuses to send.

The bench's lean load client (``stack.bench.leanclient``) builds on ``frames`` and
``handshake``; the reconnecting client that accounts for every message is
``stack.echo_client``, on ``websockets``. Nothing here imports Docker: the unit tests use
this package.
"""
