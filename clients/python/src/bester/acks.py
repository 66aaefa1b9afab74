"""Stored pushes handed to the application once (PROTOCOL.md §4, "Stored delivery").

A push of a storing type carries a durable id in ``header.msg`` and comes again (at least once)
until it is acknowledged with ``bester.ack``. :class:`Seen` is the bookkeeping both clients share:
the ids already handed to the application (a bounded set, oldest forgotten first, kept for the
client's life so that it outlasts reconnections) and the ids whose ``bester.ack`` is owed to the
server. It does no I/O and takes no lock: the clients send the acks and hold their own lock.
"""

from __future__ import annotations

import collections
from typing import List, Optional

#: How many ids the client remembers by default.
MAX_SEEN = 4096
#: The most ids one ``bester.ack`` may carry (the server's limit).
MAX_ACK = 4096

DELIVER = "deliver"  # the first copy: hand it to the application
ACK = "ack"  # a copy of one handed over and acknowledged: acknowledge it again, do not deliver
DROP = "drop"  # a copy of one handed over whose ack is still to come: drop it


class Seen:
    """The ids handed to the application (each with whether its ack was sent) and the acks
    owed. ``size`` bounds the set: past it the oldest id is forgotten."""

    def __init__(self, size: int = MAX_SEEN):
        if size < 1:
            raise ValueError("max_seen must be at least 1")
        self.size = size
        self._ids: "collections.OrderedDict[str, bool]" = collections.OrderedDict()
        #: Ids to acknowledge with the next ``bester.ack``, in order.
        self.owed: List[str] = []

    def __len__(self) -> int:
        return len(self._ids)

    def arrived(self, msg: Optional[str]) -> str:
        """What to do with a push whose ``header.msg`` is ``msg``: :data:`DELIVER`,
        :data:`ACK` (it is owed again) or :data:`DROP`."""
        if msg is None:
            return DELIVER
        acked = self._ids.get(msg)
        if acked is None:
            self._ids[msg] = False
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)
            return DELIVER
        if acked:
            self.owed.append(msg)
            return ACK
        return DROP

    def forget(self, msg: Optional[str]) -> None:
        """``msg`` was not handed over after all (dropped from a full queue, or the callback
        failed): a later copy is delivered."""
        if msg is not None:
            self._ids.pop(msg, None)

    def owe(self, msg: Optional[str]) -> None:
        """The application has taken ``msg``: acknowledge it with the next ``bester.ack``."""
        if msg is not None:
            self.owed.append(msg)

    def take(self) -> List[str]:
        """The ids for one ``bester.ack`` (at most :data:`MAX_ACK`), now counted as acked."""
        batch, self.owed = self.owed[:MAX_ACK], self.owed[MAX_ACK:]
        self.acked(batch)
        return batch

    def acked(self, msgs: List[str]) -> None:
        """A ``bester.ack`` for ``msgs`` is on its way: a later copy is acknowledged again."""
        for msg in msgs:
            if msg in self._ids:
                self._ids[msg] = True


def ack_ids(msgs: tuple) -> List[str]:
    """The ids of :meth:`Client.ack`'s arguments: pushes (their ``msg``) or id strings."""
    ids = []
    for m in msgs:
        msg = getattr(m, "msg", m)
        if msg is None:
            continue
        if not isinstance(msg, str):
            raise TypeError(f"ack() takes pushes or message id strings, not {type(m).__name__}")
        ids.append(msg)
    return ids
