"""The memory budget's bookkeeping: floors, grants before reads, waiters first come first."""

from __future__ import annotations

import pytest

from server.budget import (
    GRANT_STEP,
    GROWING,
    GROWING_IDLE,
    WRITE_ROOM,
    MemoryBudget,
    connection_sizes,
)

pytestmark = pytest.mark.unit

KIB = 2**10


class Reader:
    """A connection as the budget sees it, holding ``held`` bytes."""

    def __init__(self, held: int = 0, socket_buffer: int = 16 * KIB) -> None:
        self.floor, self.share, self.read_size = connection_sizes(socket_buffer)
        self.granted = 0
        self.held = held
        self.reading = True
        self.reads_echoes = False
        self.partial = True  # a frame partly received

    def receiving(self) -> bool:
        return self.partial

    def held_bytes(self) -> int:
        return self.held

    def hold_reading_for_memory(self) -> None:
        self.reading = False

    def release_reading_for_memory(self) -> None:
        self.reading = True


def test_the_floor_of_a_connection_is_its_objects_kernel_buffers_and_share():
    """16 KiB buffers: 16 KiB of objects, 64 KiB of kernel buffers, a 160 KiB share."""
    floor, share, read_size = connection_sizes(16 * KIB)
    assert (floor, share, read_size) == (240 * KIB, 160 * KIB, 32 * KIB)


def test_a_reader_within_its_share_needs_no_grant():
    """Small messages fit the share: nothing is taken from the pool, even when it is spent."""
    budget = MemoryBudget(limit=0)
    reader = Reader(held=64 * KIB)
    budget.accepted(reader)
    budget.after_read(reader, now=0.0)
    assert reader.reading and reader.granted == 0 and budget.free < 0


def test_a_reader_beyond_its_share_is_granted_in_steps_or_stops():
    """Beyond its share a reader is granted what its next read needs, rounded up; when the
    pool cannot grant it, it stops reading before the read."""
    budget = MemoryBudget(limit=1024 * KIB)
    big = Reader(held=500 * KIB)
    budget.accepted(big)
    budget.after_read(big, now=0.0)
    assert big.reading and big.granted % GRANT_STEP == 0
    assert big.granted >= big.held + big.read_size - big.share
    bigger = Reader(held=900 * KIB)
    budget.accepted(bigger)
    budget.after_read(bigger, now=1.0)
    assert not bigger.reading and budget.waiting == {bigger: 1.0}


def test_waiters_read_again_first_come_first_served_as_holders_drain():
    """Grants follow what holders hold, down and up; waiters resume in order of arrival."""
    # Three floors (720 KiB), the holder's grant (1408 KiB), and 100 KiB to spare.
    budget = MemoryBudget(limit=2228 * KIB)
    holder, first, second = Reader(held=1500 * KIB), Reader(held=600 * KIB), Reader(held=300 * KIB)
    for reader in (holder, first, second):
        budget.accepted(reader)
    budget.after_read(holder, now=0.0)
    budget.after_read(first, now=1.0)
    budget.after_read(second, now=2.0)
    assert not first.reading and not second.reading
    assert budget.starving(now=2.5, after=1.0) is None  # neither has shown it reads
    second.reads_echoes = True
    assert budget.starving(now=3.5, after=1.0) is second
    holder.held = 0  # its echoes drained
    budget.rebalance(now=10.0)
    assert holder.granted == 0 and first.reading and second.reading and not budget.waiting
    first.held = 2000 * KIB  # an echo's buffers replaced the frame: the grant grows with it
    budget.rebalance(now=10.0)
    assert first.granted >= first.held + first.read_size - first.share


def test_a_lost_connection_gives_its_floor_and_grant_back_once():
    """lost() may be called at a drop and again at connection_lost: counted once."""
    budget = MemoryBudget(limit=4096 * KIB)
    reader = Reader(held=1000 * KIB)
    budget.accepted(reader)
    budget.after_read(reader, now=0.0)
    assert budget.free < 4096 * KIB - reader.floor
    budget.lost(reader)
    budget.lost(reader)
    assert budget.free == 4096 * KIB and not budget.holders


def test_strangers_read_beyond_their_share_a_few_at_a_time():
    """However many strangers (peers that have not shown they read their echoes) send large
    messages at once, only GROWING of them read beyond their share at a time, so what they
    cost one turn of the event loop is bounded. The next takes a place when one finishes
    its frame; a peer that reads its echoes needs no place."""
    budget = MemoryBudget(limit=1024 * 1024 * KIB)
    strangers = [Reader(held=500 * KIB) for _ in range(GROWING + 1)]
    known = Reader(held=500 * KIB)
    known.reads_echoes = True
    for reader in [*strangers, known]:
        budget.accepted(reader)
        budget.after_read(reader, now=0.0)
    assert all(reader.reading for reader in strangers[:GROWING])
    assert not strangers[-1].reading and budget.waiting == {strangers[-1]: 0.0}
    assert known.reading
    budget.rebalance(now=GROWING_IDLE / 2)
    assert not strangers[-1].reading
    strangers[0].partial = False  # its message is whole (or its own echoes hold it back)
    budget.rebalance(now=GROWING_IDLE / 2)
    assert strangers[-1].reading and not budget.waiting and strangers[0] not in budget.growing


def test_a_stranger_that_stops_sending_gives_its_place_up():
    """Half a frame and then nothing: after GROWING_IDLE without a read its place is free,
    so GROWING such peers cannot keep every other stranger from its turn."""
    budget = MemoryBudget(limit=1024 * 1024 * KIB)
    stalled = [Reader(held=500 * KIB) for _ in range(GROWING)]
    waiting = Reader(held=500 * KIB)
    for reader in [*stalled, waiting]:
        budget.accepted(reader)
        budget.after_read(reader, now=0.0)
    assert not waiting.reading
    budget.rebalance(now=GROWING_IDLE / 2)
    assert not waiting.reading
    budget.rebalance(now=GROWING_IDLE)
    assert waiting.reading and waiting in budget.growing


def test_a_stranger_holding_more_than_small_messages_waits_its_turn_within_its_share():
    """Within its share a stranger needs no grant, but once it holds more than WRITE_ROOM
    it reads on only in its turn; a peer that reads its echoes never waits for one."""
    budget = MemoryBudget(limit=1024 * 1024 * KIB)
    busy = [Reader(held=500 * KIB) for _ in range(GROWING)]
    small, large = Reader(held=WRITE_ROOM), Reader(held=WRITE_ROOM + 1)
    known = Reader(held=WRITE_ROOM + 1)
    known.reads_echoes = True
    for reader in [*busy, small, large, known]:
        budget.accepted(reader)
        budget.after_read(reader, now=0.0)
    assert small.reading and known.reading and not large.reading
    assert large.granted == 0 and budget.waiting == {large: 0.0}
