"""The reconnecting echo client the scenarios trust to say that nothing was lost.

* ``ledger``: every message a client sent and what became of it (echoed, corrupted,
  failed with its reason, pending);
* ``reconnecting``: :class:`ReconnectingClient`, one client on ``websockets`` that
  reconnects with backoff and resends what was in flight;
* ``fleet``: many clients started, watched and stopped together.

It is also an example of how an application should talk to the gateway. Nothing here
imports Docker: the unit tests use this package.
"""
