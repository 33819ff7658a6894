"""WS_MEMORY_BUDGET as a limit: bytes are reserved before a connection may read them.

Every connection has a floor, counted against the budget from the moment it is accepted:

- its objects (``CONNECTION_OVERHEAD``),
- its kernel socket buffers, which the server fixes (WS_SOCKET_BUFFER, doubled by the kernel,
  once for receiving and once for sending) instead of letting TCP autotuning grow them,
- a guaranteed share of user space (``share``): room for what one read brings (at most
  what the kernel's receive buffer holds), counted twice as every message not yet echoed
  is (server.connection's ``held_bytes``), the buffer it was read into, the next read, and small
  echoes waiting to be written.

A connection reads freely while what it holds in user space (partial frame, receive queue,
the message being echoed, the write buffer) plus its next read fits in its share. Beyond
that it must be granted the difference from the pool, which is what the budget leaves after
the process's own base and every floor. When the pool cannot grant it, the connection stops
reading *before* it takes another byte, and resumes when echoes drain and grants come back.
So a connection that never reads its echoes stops at what it was granted, and a healthy
client that sends small messages never waits: its share is its own.

Strangers (connections whose peers have not shown that they read their echoes) that hold
more than small messages (WRITE_ROOM) read on only GROWING at a time. Each read takes at
most ``read_size``, so however many strangers send large messages at once, they cost one
turn of the event loop a bounded amount of work, and the other clients' round trips stay
short.

Worst case, by construction: ``max(budget, base + connections x floor)``. The budget holds
unless the floors of the connections alone exceed it (too many connections for it).
"""

from __future__ import annotations

import math
from typing import Protocol

KiB = 2**10
CONNECTION_OVERHEAD = 16 * KiB  # Python objects of one connection (about 12 KiB measured idle)
WRITE_ROOM = 32 * KiB  # the share's room beyond the next read: small messages and echoes
GRANT_STEP = 64 * KiB  # grants are rounded up to this, so a growing frame asks now and then
# Process memory the budget does not see as connections: log and metric buffers, the
# allocator's slack. Counted with the base, once.
HEADROOM = 8 * 2**20
# Connections whose peers have not shown they read their echoes that may read on at once
# while holding more than WRITE_ROOM (a large message). Each reads at most ``read_size``
# per turn of the event loop, so this bounds what strangers' large messages cost a turn,
# and so every other client's latency, however many they are.
GROWING = 16
MEMORY, TURN = "memory", "turn"  # what a waiting connection waits for
# A stranger that has not read for this long (s) gives its place up: one that sends half a
# frame and stops cannot keep the others from their turn.
GROWING_IDLE = 0.5


class Reader(Protocol):
    """What the budget needs of a connection."""

    granted: int  # bytes of the pool it holds beyond its share
    floor: int  # what it costs the budget from its acceptance (see floor_of)
    share: int  # user-space bytes it may hold, its next read included, without a grant
    read_size: int  # what one read can take at most: twice its receive buffer
    reads_echoes: bool  # its peer has shown it reads what it is sent

    def receiving(self) -> bool: ...  # a message is partly received

    def held_bytes(self) -> int: ...

    def hold_reading_for_memory(self) -> None: ...

    def release_reading_for_memory(self) -> None: ...


def connection_sizes(socket_buffer: int) -> tuple[int, int, int]:
    """``(floor, share, read_size)`` of a connection whose socket buffers (receive and send)
    were set to ``socket_buffer`` bytes each.

    The kernel doubles what is asked for (its bookkeeping counts into it), so one read takes
    at most twice the receive buffer, and the send queue holds at most twice the send buffer.
    """
    read_size = 2 * socket_buffer
    share = 4 * read_size + WRITE_ROOM
    kernel = 2 * (2 * socket_buffer)
    return CONNECTION_OVERHEAD + kernel + share, share, read_size


class MemoryBudget:
    """The pool of one server process: ``limit`` bytes for floors and grants."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # the budget less the process's base
        self.floors = 0  # sum of the floors of the connections accepted and not yet lost
        self.granted = 0  # sum of the grants beyond the connections' shares
        self.holders: set[Reader] = set()  # connections with a grant
        self.waiting: dict[Reader, float] = {}  # stopped for memory -> since when
        # Strangers reading a message beyond their share -> when each last read.
        self.growing: dict[Reader, float] = {}

    @property
    def free(self) -> int:
        return self.limit - self.floors - self.granted

    def accepted(self, connection: Reader) -> None:
        self.floors += connection.floor

    def lost(self, connection: Reader) -> None:
        """The connection is gone (or being dropped): its floor and grant come back, once."""
        self.floors -= connection.floor
        connection.floor = 0
        self._set_grant(connection, 0)
        self.waiting.pop(connection, None)
        self.growing.pop(connection, None)

    def after_read(self, connection: Reader, now: float) -> None:
        """Reserve the connection's next read, or stop it from reading until there is room
        (or, for a stranger, its turn)."""
        if connection in self.growing:
            if connection.receiving():
                self.growing[connection] = now
            else:
                del self.growing[connection]
        if self._admit(connection, now) and connection not in self.waiting:
            self.waiting[connection] = now
            connection.hold_reading_for_memory()

    def rebalance(self, now: float) -> None:
        """Grants follow what holders hold; waiters read again, first come first.

        Called every few milliseconds: echoes drain between two calls, not in a callback.
        A grant also grows when a holder holds more than it was granted (an echo's buffers
        replacing the frame they came from), so the pool never counts less than is held.
        Waiters whose peers have shown they read go first; within each kind, in order of
        arrival, so that a large need is not passed over for ever by small ones.
        """
        for connection in list(self.holders):
            self._set_grant(connection, self._need(connection, connection.held_bytes()))
        for connection, last_read in list(self.growing.items()):
            if not connection.receiving() or now - last_read >= GROWING_IDLE:
                del self.growing[connection]
        for connection in sorted(self.waiting, key=lambda c: not c.reads_echoes):
            refused = self._admit(connection, now)
            if refused == MEMORY:
                break
            if refused == TURN:
                continue
            del self.waiting[connection]
            connection.release_reading_for_memory()

    def starving(self, now: float, after: float) -> Reader | None:
        """The connection that has waited longest, ``after`` seconds or more, of those whose
        peers have shown they read what they are sent."""
        for connection, since in self.waiting.items():
            if now - since < after:
                return None
            if connection.reads_echoes:
                return connection
        return None

    def _admit(self, connection: Reader, now: float) -> str | None:
        """Let the connection read once more: grant what that needs, and a stranger beyond
        its room a place among the GROWING. None if it may; else what it waits for
        (MEMORY or TURN)."""
        held = connection.held_bytes()
        extra = self._need(connection, held) - connection.granted
        if extra > 0 and extra > self.free:
            return MEMORY
        strange = not connection.reads_echoes and connection not in self.growing
        if strange and held > WRITE_ROOM:  # more than small messages: a large one
            if len(self.growing) >= GROWING:
                return TURN
            self.growing[connection] = now
        if extra > 0:
            self._set_grant(connection, connection.granted + extra)
        return None

    def shortfall(self, connection: Reader) -> int:
        """Bytes the connection must be granted before it may read once more."""
        return self._need(connection, connection.held_bytes()) - connection.granted

    def _need(self, connection: Reader, held: int) -> int:
        """Bytes beyond its share the connection, holding ``held``, needs to read once more,
        rounded up."""
        beyond = held + connection.read_size - connection.share
        return GRANT_STEP * math.ceil(max(0, beyond) / GRANT_STEP)

    def _set_grant(self, connection: Reader, grant: int) -> None:
        self.granted += grant - connection.granted
        connection.granted = grant
        if grant:
            self.holders.add(connection)
        else:
            self.holders.discard(connection)
