"""The ledger of one client: every message it sent, by sequence number, and what became of it.

Every message gets an id (client name and sequence number) and random text (multi-byte
UTF-8 included), and the echo is compared with what was sent, character for character.
Each message is in the ledger as

* ``pending``: sent, its echo not back yet (in flight, or waiting to be resent);
* ``echoed``: came back intact;
* ``corrupted``: came back different;
* ``failed``: given up on and reported to the sender, with the reason: its connection
  broke more than ``max_resends`` times before its echo came back (or every time, with
  ``resend=False``), or the client stopped before it could resend it.

The echo carries the sequence number, so an echo of a message that is no longer pending
(a late duplicate of a resent message) is recognised and counted in ``duplicates``, never
taken for a new message nor counted as lost. The summary keeps ``sent`` (distinct
messages), ``resent`` (extra sends), ``echoed``, ``duplicates`` and ``failed`` apart.
"""

from __future__ import annotations

import enum
import random
import string
from dataclasses import dataclass

# Characters of the random part of a message: ASCII and 2-, 3- and 4-byte UTF-8.
ALPHABET = string.ascii_letters + string.digits + "äéß€жñ中文😀🚀"


class Outcome(enum.StrEnum):
    PENDING = "pending"
    ECHOED = "echoed"
    CORRUPTED = "corrupted"
    FAILED = "failed"


@dataclass
class Message:
    """One message sent, and what became of it."""

    seq: int
    session: int  # the session it was first sent on
    text: str
    sent_at: float  # first sent (epoch seconds)
    outcome: Outcome = Outcome.PENDING
    settled_at: float | None = None
    reason: str = ""
    lost_at_stop: bool = False  # no echo although the connection stayed up: lost silently
    sends: int = 1  # 1 + times resent after a reconnect
    last_sent_at: float = 0.0  # latest send; the echo timeout counts from here
    duplicates: int = 0  # echoes that came after it had settled

    def __post_init__(self) -> None:
        self.last_sent_at = self.last_sent_at or self.sent_at


class Ledger:
    """Every message one client sent, by sequence number, with its outcome."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.messages: dict[int, Message] = {}
        self.stray: list[str] = []  # echoes that match no message sent (must stay empty)
        self.resent = 0  # sends of a message after the first, over all messages
        self.duplicates = 0  # echoes of a message that had already settled
        self._pending: dict[int, Message] = {}  # insertion order: oldest first
        self._next_seq = 0

    def new(self, session: int, size: int, now: float) -> Message:
        """Record a message about to be sent; it is pending from now on."""
        self._next_seq += 1
        seq = self._next_seq
        body = "".join(random.choices(ALPHABET, k=size))
        message = Message(seq, session, f"{self.name}#{seq}#{body}", now)
        self.messages[seq] = message
        self._pending[seq] = message
        return message

    def resend(self, message: Message, now: float) -> None:
        """Record that a pending message goes out again (after a reconnect)."""
        message.sends += 1
        message.last_sent_at = now
        self.resent += 1

    def settle(self, echo: str | bytes, now: float) -> Message | None:
        """Match an echo to its pending message and compare it.

        None if it settles nothing: a duplicate (the echo of a message already settled,
        counted) or a stray (it names no message of this client, kept for the report).
        """
        text = echo.decode(errors="replace") if isinstance(echo, bytes) else echo
        name, _, rest = text.partition("#")
        seq_text = rest.partition("#")[0]
        seq = int(seq_text) if seq_text.isdigit() else None
        message = self._pending.pop(seq, None) if seq is not None else None
        if name == self.name and message is None and seq in self.messages:
            self.messages[seq].duplicates += 1
            self.duplicates += 1
            return None
        if name != self.name or message is None:
            self.stray.append(text[:80])
            return None
        intact = isinstance(echo, str) and echo == message.text
        message.outcome = Outcome.ECHOED if intact else Outcome.CORRUPTED
        message.settled_at = now
        if not intact:
            message.reason = f"echo differs: {text[:40]!r}..."
        return message

    def fail_pending(
        self,
        reason: str,
        now: float,
        *,
        lost_at_stop: bool = False,
        min_sends: int = 0,
    ) -> int:
        """Fail every pending message sent at least ``min_sends`` times; return how many.

        ``reason`` may name ``{sends}``, the number of times the message went out.
        """
        failed = [m for m in self._pending.values() if m.sends >= min_sends]
        for message in failed:
            del self._pending[message.seq]
            message.outcome = Outcome.FAILED
            message.settled_at = now
            message.reason = reason.format(sends=message.sends)
            message.lost_at_stop = lost_at_stop
        return len(failed)

    def oldest_pending(self) -> Message | None:
        return next(iter(self._pending.values()), None)

    def pending_messages(self) -> list[Message]:
        """The messages without their echo yet, oldest first (a copy)."""
        return list(self._pending.values())

    def count(self, outcome: Outcome) -> int:
        if outcome is Outcome.PENDING:
            return len(self._pending)
        return sum(1 for m in self.messages.values() if m.outcome is outcome)

    @property
    def sent(self) -> int:
        return len(self.messages)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def echoed(self) -> int:
        return self.count(Outcome.ECHOED)

    @property
    def failed(self) -> int:
        return self.count(Outcome.FAILED)

    @property
    def corrupted(self) -> int:
        return self.count(Outcome.CORRUPTED)

    @property
    def lost_at_stop(self) -> int:
        return sum(1 for m in self.messages.values() if m.lost_at_stop)

    def summary(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "echoed": self.echoed,
            "resent": self.resent,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "corrupted": self.corrupted,
            "pending": self.pending,
            "lost_at_stop": self.lost_at_stop,
            "stray": len(self.stray),
        }
