"""Legacy scp (``scp -O``) through the gateway: every file checked before it crosses.

The exec command (``scp -t DIR`` / ``scp -f PATH``) is checked as a whole first; this relay
then checks each file and directory record of the stream as it comes (``write DIR/name``,
``mkdir DIR/sub`` for uploads; ``read PATH/name`` for downloads), so that ``scp -r`` into an
allowed directory cannot carry a file into a denied one. A denied record never reaches the
sink: the relay answers the source in the sink's place (scp's own refusal, ``\\1message``),
the source skips that file and goes on, and a refused download is also told to the caller on
stderr (the caller's scp is the sink and would not know otherwise).

Sans-IO over ``transfer.ScpStream``: ``from_source`` / ``from_sink`` take bytes and return a
``Moves`` of bytes to pass on each way.
"""

from __future__ import annotations

from collections.abc import Callable

from policy.model import Decision
from protocols.ssh.sftp import normalize_path
from protocols.ssh.transfer import ScpDir, ScpDone, ScpEvent, ScpFile, ScpStream


class Moves:
    """What to send after one input: to the sink, to the source, and notices for the caller."""

    __slots__ = ("to_sink", "to_source", "notices")

    def __init__(self) -> None:
        self.to_sink = bytearray()
        self.to_source = bytearray()
        self.notices: list[str] = []


class ScpRelay:
    def __init__(self, stream: ScpStream, *, upload: bool, decide: Callable[[str, str], Decision],
                 done: Callable[[str, ScpDone], None]):
        """``decide(op, path)`` is the policy's word on one file operation; ``done(op, event)``
        is called for each file that went through."""
        self.stream = stream
        self.upload = upload
        self._decide = decide
        self._done = done
        self._pending = bytearray()  # source bytes not passed on yet
        self._base = 0  # source offset of _pending[0]

    def from_source(self, data: bytes) -> Moves:
        moves = Moves()
        self._pending += data
        self._handle(self.stream.feed(data), moves)
        return moves

    def from_sink(self, data: bytes) -> Moves:
        """The sink's answers: passed on to the source unchanged (``moves.to_source``), after the
        stream has seen them (they decide how the source's next bytes are read)."""
        moves = Moves()
        events = self.stream.reply(data)
        moves.to_source += data
        self._handle(events, moves)
        return moves

    def _handle(self, events: list[ScpEvent], moves: Moves) -> None:
        queue = list(events)
        while queue:
            event = queue.pop(0)
            if isinstance(event, (ScpFile, ScpDir)):
                moves.to_sink += self._take(event.start)
                op = ("mkdir" if isinstance(event, ScpDir) else "write") if self.upload else "read"
                path = normalize_path(event.path)
                decision = self._decide(op, path)
                if not decision.allowed:
                    self._take(event.end)  # the record is dropped: the sink never sees it
                    answer, more = self.stream.refuse(decision.message)
                    moves.to_source += answer
                    moves.notices.append(decision.message)
                    queue[:0] = more
            elif isinstance(event, ScpDone):
                self._done("write" if self.upload else "read", event)
        held = self.stream.held_from
        moves.to_sink += self._take(held if held is not None else self.stream.offset)

    def _take(self, upto: int) -> bytes:
        n = upto - self._base
        if n <= 0:
            return b""
        out = bytes(self._pending[:n])
        del self._pending[:n]
        self._base = upto
        return out
