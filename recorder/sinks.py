"""Audit export: every recorded event, delivered to each configured sink once per event id.

The recorder's writer thread calls ``AuditExporter.publish`` after an event is on disk. The event
goes into a persistent spool (``state_dir/audit/``); one delivery thread per sink reads the spool
from that sink's persistent cursor, so a receiver that is down for a while, or a gateway restart,
loses nothing. ``docs/audit.md`` describes the guarantees and the wire formats; the short version:

- ``publish`` only appends the encoded line to an in-memory buffer; the spool thread writes and
  fsyncs it (group commit: one fsync for everything published meanwhile, at most every
  ``MIN_FLUSH_INTERVAL_S``). Sinks only ever see fsynced events, so a cursor never points past
  data that a crash could take back.
- A cursor is a spool position, saved (temp file, fsync, rename, fsync of the folder) after each
  delivery the receiver acknowledged; a crash in between resends that one delivery, so receivers
  dedupe by event ``id`` (the ``jsonl`` sink does it itself).
- Segments are deleted once every configured sink's cursor is past them.
"""

from __future__ import annotations

import abc
import errno
import fcntl
import hashlib
import http.client
import logging
import os
import random
import re
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from gateway.config import AuditSink
from gateway.errors import WiregateError
from gateway.keys import ensure_private_dir
from gateway.secrets import Secret

log = logging.getLogger("wiregate.audit")

SEGMENT_BYTES = 16 << 20            # a spool segment is closed once it holds this much
MIN_FLUSH_INTERVAL_S = 0.01         # at most ~100 spool fsyncs per second
MAX_PENDING_BYTES = 64 << 20        # published but not yet written: beyond this, publish waits
STREAM_BATCH = 1000                 # jsonl / syslog: events per write at most
MAX_BATCH_BYTES = 4 << 20           # any sink: bytes per delivery at most (at least one event)
READ_CHUNK = 256 << 10
UDP_MAX_BYTES = 2048                # RFC 5426: receivers SHOULD accept 2048 octets
TCP_MAX_BYTES = 64 << 10
NET_TIMEOUT_S = 30.0
BACKOFF_BASE_S = 0.1
IDLE_WAKE_S = 1.0                   # spool thread: trim check when nothing is published
FAILURE_REMINDER_S = 60.0           # a failing sink is logged again this often

# RFC 5424: facility 13 "log audit"; severity 4 (warning) for denials, 6 (informational) otherwise
_FACILITY = 13
_SD_ID = "wiregate@32473"           # 32473: the enterprise number RFC 5612 reserves for examples
_BOM = b"\xef\xbb\xbf"
_SEGMENT_RE = re.compile(r"spool-(\d{12})\.jsonl")
_LINE_HEAD = b'{"id":'
_SD_ESCAPE_RE = re.compile(r'(["\\\]])')
_UNPRINTABLE_RE = re.compile(r"[^\x21-\x7e]")


class Position(msgspec.Struct, frozen=True, order=True):
    """A point in the spool: the segment number and a byte offset in it (always a line boundary)."""

    segment: int
    offset: int


class _CursorFile(msgspec.Struct):
    segment: int
    offset: int
    sink: str       # which config entry it belongs to, for an operator reading the folder


class SinkStatus(msgspec.Struct):
    name: str                        # "audit[0] (webhook)"
    delivered: int                   # events acknowledged since start
    dead_lettered: int               # events the receiver rejected (kept in audit/rejected/)
    failing: bool                    # the last delivery attempt failed and is being retried
    last_error: str | None           # error class or HTTP status, never content
    position: Position               # the saved cursor


class AuditExporter:
    """The spool and one delivery thread per sink. Owned by the server; fed by the writer thread."""

    def __init__(self, state_dir: Path, sinks: list[AuditSink], *,
                 segment_bytes: int = SEGMENT_BYTES, net_timeout_s: float = NET_TIMEOUT_S) -> None:
        directory = Path(state_dir) / "audit"
        ensure_private_dir(directory)
        ensure_private_dir(directory / "cursors")
        self._lock_fd = _lock_folder(directory)
        try:
            self._spool = _Spool(directory, segment_bytes)
            self._workers = [_Worker(self._spool, directory, sid, _make_sink(cfg, i, net_timeout_s))
                             for i, (sid, cfg) in enumerate(zip(_sink_ids(sinks), sinks))]
        except BaseException as e:
            if hasattr(self, "_spool"):
                self._spool.close()
            os.close(self._lock_fd)
            if isinstance(e, OSError):
                raise WiregateError(f"{directory}: cannot open the audit spool: {e.strerror or e}") from None
            raise
        self._started = False
        self._stopped = False
        self._flusher = threading.Thread(target=self._spool.run, name="wiregate-audit-spool", daemon=True,
                                         kwargs={"cursors": self._min_segment})

    def publish(self, event_id: str, event: dict) -> None:
        """Append one event (``event_id`` = ``"<session_id>:<seq>"``) to the spool; delivered later.

        Costs one JSON encoding and a buffer append. Waits only when ``MAX_PENDING_BYTES`` are
        published but cannot be written (the state dir's disk is failing).
        """
        if not isinstance(event_id, str) or not event_id:
            raise TypeError("event_id must be a non-empty str")
        if "id" in event:
            raise ValueError('an audit event must not carry its own "id" key')
        body = msgspec.json.encode(event)
        if len(body) > 2:
            line = b"".join((_LINE_HEAD, msgspec.json.encode(event_id), b",", memoryview(body)[1:], b"\n"))
        else:
            line = b"".join((_LINE_HEAD, msgspec.json.encode(event_id), b"}\n"))
        self._spool.append(line)

    def start(self) -> None:
        if self._started or self._stopped:
            raise RuntimeError("AuditExporter.start: already started or stopped")
        self._started = True
        self._flusher.start()
        for w in self._workers:
            w.start()

    def stop(self, timeout: float = 10) -> None:
        """Write out what was published, let each sink deliver what it can without waiting on a
        failing receiver, for ``timeout`` seconds at most; undelivered events stay in the spool."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        if self._started:
            self._spool.request_stop()
            self._flusher.join(max(0.0, deadline - time.monotonic()))
            for w in self._workers:
                w.request_stop(deadline)
            self._spool.wake_readers()
            for w in self._workers:
                w.join(max(0.0, deadline - time.monotonic()))
        else:
            self._spool.flush()
        for w in self._workers:
            # a thread still blocked in the network must not save a cursor once a new exporter
            # may own this folder
            w.abandon()
        self._spool.close()
        os.close(self._lock_fd)

    @property
    def healthy(self) -> bool:
        """False while the spool cannot be written (events wait in memory, then publish waits)."""
        return self._spool.healthy

    def status(self) -> list[SinkStatus]:
        return [w.status() for w in self._workers]

    def _min_segment(self) -> int:
        # no sink at all: nothing will ever read the spool
        return min((w.committed.segment for w in self._workers), default=self._spool.durable.segment)


# --------------------------------------------------------------------------
# The spool: append-only segment files of JSON lines
# --------------------------------------------------------------------------

class _Spool:
    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.dir = directory
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._has_pending = threading.Condition(self._lock)
        self._space = threading.Condition(self._lock)
        self._moved = threading.Condition(self._lock)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._stopping = False
        self._running = False
        self._closed = False
        self._dirty = False        # a failed write may have left a partial batch on disk
        self.healthy = True
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        existing = self.segments()
        # A new run never appends to a non-empty segment: its tail may be torn by the crash that
        # ended the last run, and a cursor saved then may point past what survived.
        if existing and os.stat(self.path(existing[-1])).st_size == 0:
            self._seg = existing[-1]
            self._fd = os.open(self.path(self._seg), os.O_WRONLY | os.O_APPEND)
        else:
            self._seg = existing[-1] + 1 if existing else 1
            self._fd = self._create(self._seg)
        self._size = 0
        self.durable = Position(self._seg, 0)
        self._trimmed_below = existing[0] if existing else self._seg

    def path(self, segment: int) -> Path:
        return self.dir / f"spool-{segment:012d}.jsonl"

    def segments(self) -> list[int]:
        found = []
        with os.scandir(self.dir) as it:
            for entry in it:
                m = _SEGMENT_RE.fullmatch(entry.name)
                if m:
                    found.append(int(m.group(1)))
        found.sort()
        return found

    def next_segment(self, after: int) -> int:
        """The first segment after ``after`` still on disk (the one being written at the latest)."""
        later = [s for s in self.segments() if s > after]
        return min(later) if later else self.durable.segment

    # -- producer side ---------------------------------------------------

    def append(self, line: bytes) -> None:
        with self._lock:
            if self._closed or self._stopping:
                raise RuntimeError("audit exporter is stopped: the event is not exported")
            while self._pending_bytes >= MAX_PENDING_BYTES and self._running and not self._stopping:
                self._space.wait(0.5)
            if not self._pending:
                self._has_pending.notify()
            self._pending.append(line)
            self._pending_bytes += len(line)
        if not self._running and self._pending_bytes >= MAX_PENDING_BYTES:
            self.flush()     # published before start: nobody else would write it

    def flush(self) -> bool:
        """Write and fsync everything pending; False when the disk refused (kept for a retry)."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> bool:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return True
        data = b"".join(batch)
        try:
            if self._dirty:
                os.ftruncate(self._fd, self._size)
                self._dirty = False
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                self._dirty = True
                view = view[n:]
            os.fsync(self._fd)
            self._dirty = False
        except OSError as e:
            with self._lock:
                self._pending[:0] = batch
            if self.healthy:
                log.error("audit spool: cannot write %s (%s); events wait in memory",
                          self.dir, errno.errorcode.get(e.errno, type(e).__name__))
            self.healthy = False
            return False
        if not self.healthy:
            log.warning("audit spool: writable again")
            self.healthy = True
        self._size += len(data)
        durable = Position(self._seg, self._size)
        if self._size >= self._segment_bytes:
            try:
                fd = self._create(self._seg + 1)
            except OSError as e:
                log.error("audit spool: cannot start a new segment (%s)", type(e).__name__)
            else:
                os.close(self._fd)
                self._fd, self._seg, self._size = fd, self._seg + 1, 0
                durable = Position(self._seg, 0)
        with self._lock:
            self._pending_bytes -= len(data)
            self.durable = durable
            self._space.notify_all()
            self._moved.notify_all()
        return True

    def _create(self, segment: int) -> int:
        fd = os.open(self.path(segment), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.fsync(self._dir_fd)
        return fd

    # -- the spool thread ------------------------------------------------

    def run(self, cursors: Callable[[], int]) -> None:
        with self._lock:
            self._running = True
        try:
            while True:
                with self._lock:
                    if not self._pending and not self._stopping:
                        self._has_pending.wait(IDLE_WAKE_S)
                    stopping = self._stopping
                    if self._closed:
                        return
                began = time.monotonic()
                ok = self.flush()
                self._trim(cursors())
                if stopping and (ok or not self._pending):
                    return
                # group commit: what is published during the pause goes in the next fsync
                pause = (MIN_FLUSH_INTERVAL_S if ok else 1.0) - (time.monotonic() - began)
                if pause > 0:
                    time.sleep(pause)
        finally:
            with self._lock:
                self._running = False
                self._space.notify_all()

    def request_stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._has_pending.notify_all()
            self._moved.notify_all()

    def wake_readers(self) -> None:
        with self._lock:
            self._moved.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._moved.notify_all()
        with self._flush_lock:
            if self._pending:
                log.error("audit spool: %d events could not be written before stop", len(self._pending))
            os.close(self._fd)
            os.close(self._dir_fd)

    def _trim(self, min_segment: int) -> None:
        below = min(min_segment, self.durable.segment)
        if below <= self._trimmed_below:
            return
        for seg in self.segments():
            if seg >= below:
                break
            try:
                os.unlink(self.path(seg))
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("audit spool: cannot delete segment %d (%s)", seg, type(e).__name__)
                return
        self._trimmed_below = below

    # -- consumer side ---------------------------------------------------

    def wait_for_data(self, pos: Position, timeout: float) -> None:
        with self._lock:
            if self.durable <= pos and not self._closed:
                self._moved.wait(timeout)


class _Reader:
    """A sink's read position in the spool. Returns whole, fsynced lines with the position after each."""

    def __init__(self, spool: _Spool, pos: Position, name: str) -> None:
        self._spool = spool
        self.pos = pos
        self._name = name
        self._fd: int | None = None
        self._fd_seg = -1

    def read(self, max_lines: int, max_bytes: int) -> list[tuple[bytes, Position]]:
        out: list[tuple[bytes, Position]] = []
        size = 0
        chunk = READ_CHUNK
        while len(out) < max_lines and size < max_bytes:
            durable = self._spool.durable
            seg, off = self.pos.segment, self.pos.offset
            fd = self._open(seg)
            if fd is None:
                nxt = self._spool.next_segment(seg)
                if nxt <= seg:
                    break
                log.error("%s: spool segment %d is gone; events in it were never delivered to this sink",
                          self._name, seg)
                self.pos = Position(nxt, 0)
                continue
            complete = seg < durable.segment
            limit = os.fstat(fd).st_size if complete else durable.offset
            if off >= limit:
                if not complete:
                    break
                self._close()
                self.pos = Position(self._spool.next_segment(seg), 0)
                continue
            data = os.pread(fd, min(limit - off, chunk), off)
            last_nl = data.rfind(b"\n")
            if last_nl < 0:
                if off + len(data) < limit:
                    chunk *= 2          # one line longer than the chunk
                    continue
                log.warning("%s: spool segment %d ends with a torn line (a crash while writing); skipped",
                            self._name, seg)
                self._close()
                self.pos = Position(self._spool.next_segment(seg), 0)
                continue
            start = 0
            while start <= last_nl and len(out) < max_lines and size < max_bytes:
                end = data.index(b"\n", start)
                line = data[start:end]
                start = end + 1
                if line.startswith(_LINE_HEAD) and line.endswith(b"}"):
                    out.append((line, Position(seg, off + start)))
                    size += len(line) + 1
                else:
                    log.warning("%s: skipped a malformed spool line (segment %d, offset %d)",
                                self._name, seg, off + end - len(line))
            self.pos = Position(seg, off + start)
        return out

    def _open(self, seg: int) -> int | None:
        if self._fd_seg != seg:
            self._close()
            try:
                self._fd = os.open(self._spool.path(seg), os.O_RDONLY)
            except FileNotFoundError:
                return None
            self._fd_seg = seg
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._fd_seg = None, -1


# --------------------------------------------------------------------------
# Delivery: one thread per sink
# --------------------------------------------------------------------------

class _Transient(Exception):
    """Worth retrying: connection trouble, 408/429/5xx, a local write error."""

    def __init__(self, reason: str, *, done: int = 0, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.done = done            # lines of the batch that did get through, in order
        self.retry_after = retry_after


class _Rejected(Exception):
    """The receiver refused the content itself (400, 413, 422): resending it unchanged cannot help.

    ``index`` names the one refused line when the sink knows it (the lines before it got through);
    None means the batch as a whole was refused.
    """

    def __init__(self, reason: str, index: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.index = index


class _Stop(Exception):
    pass


class _Sink(abc.ABC):
    """A destination: jsonl, syslog or webhook (below). ``send`` delivers a batch or raises."""

    name: str
    batch_size = STREAM_BATCH
    batch_ms = 0
    retry_max_s = 60.0

    @abc.abstractmethod
    def send(self, lines: list[bytes]) -> None: ...

    def close(self) -> None:
        pass

    def abort(self) -> None:
        """From another thread: make a send blocked in the network return (with an error)."""
        self.close()


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)   # close() alone does not wake a thread blocked in recv
        except OSError:
            pass


class _Worker(threading.Thread):
    def __init__(self, spool: _Spool, directory: Path, sink_id: str, sink: _Sink) -> None:
        super().__init__(name=f"wiregate-audit-{sink_id}", daemon=True)
        self._spool = spool
        self._sink = sink
        self._cursor_path = directory / "cursors" / f"{sink_id}.json"
        self._dead_letter_path = directory / "rejected" / f"{sink_id}.jsonl"
        self._stop_event = threading.Event()
        self._deadline = float("inf")
        self._commit_lock = threading.Lock()
        self._abandoned = False
        self._rng = random.Random()
        self._delivered = 0
        self._dead_lettered = 0
        self._failures = 0
        self._failing_since = 0.0
        self._last_reminder = 0.0
        self._last_error: str | None = None
        self.committed = self._load_cursor()
        try:
            self._save_cursor(self.committed)     # a new sink's cursor holds the spool from now on
        except OSError as e:
            raise WiregateError(f"{self._cursor_path}: cannot write the audit cursor: {e.strerror or e}") from None

    # -- cursor ---------------------------------------------------------

    def _load_cursor(self) -> Position:
        end = self._spool.durable
        try:
            raw = self._cursor_path.read_bytes()
        except FileNotFoundError:
            return end      # a new sink starts with the events published from now on
        try:
            c = msgspec.json.decode(raw, type=_CursorFile)
            pos = Position(c.segment, c.offset)
        except msgspec.DecodeError:
            # never lose events: resend what the spool still holds, receivers dedupe by id
            oldest = self._spool.segments()
            pos = Position(oldest[0] if oldest else end.segment, 0)
            log.warning("%s: unreadable cursor file %s; resending from the oldest spooled event",
                        self._sink.name, self._cursor_path)
        if pos > end:
            log.warning("%s: cursor is past the end of the spool; resuming at the end", self._sink.name)
            pos = end
        return pos

    def _commit(self, pos: Position) -> None:
        """Save the cursor; a disk error is retried (the events stay delivered, only unrecorded)."""
        attempt = 0
        while True:
            try:
                self._save_cursor(pos)
                return
            except OSError as e:
                self._failed(f"cursor file: {type(e).__name__}")
                self._backoff(attempt, None)
                attempt += 1

    def _save_cursor(self, pos: Position) -> None:
        with self._commit_lock:
            if self._abandoned:
                return
            data = msgspec.json.encode(_CursorFile(pos.segment, pos.offset, self._sink.name))
            tmp = self._cursor_path.with_name(f".{self._cursor_path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._cursor_path)
            dir_fd = os.open(self._cursor_path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self.committed = pos

    # -- lifecycle ------------------------------------------------------

    def request_stop(self, deadline: float) -> None:
        self._deadline = deadline
        self._stop_event.set()

    def abandon(self) -> None:
        with self._commit_lock:
            self._abandoned = True
        if self.is_alive():
            log.warning("%s: still delivering at stop; undelivered events stay in the spool", self._sink.name)
            self._sink.abort()

    def status(self) -> SinkStatus:
        return SinkStatus(self._sink.name, self._delivered, self._dead_lettered, self._failures > 0,
                          self._last_error, self.committed)

    # -- the loop -------------------------------------------------------

    def run(self) -> None:
        reader = _Reader(self._spool, self.committed, self._sink.name)
        sink = self._sink
        try:
            while True:
                stopping = self._stop_event.is_set()
                if stopping and time.monotonic() >= self._deadline:
                    return
                items = reader.read(sink.batch_size, MAX_BATCH_BYTES)
                if not items:
                    if reader.pos != self.committed:
                        self._commit(reader.pos)        # moved past empty or torn segments
                    if stopping:
                        return
                    self._spool.wait_for_data(reader.pos, IDLE_WAKE_S)
                    continue
                if sink.batch_ms and len(items) < sink.batch_size:
                    self._fill(reader, items)
                self._deliver(items)
        except _Stop:
            return
        except Exception:
            # a bug, not a receiver problem: say so loudly; the cursor keeps the events
            log.exception("%s: delivery thread failed; events stay in the spool until restart", sink.name)
        finally:
            reader._close()
            sink.close()

    def _fill(self, reader: _Reader, items: list[tuple[bytes, Position]]) -> None:
        """Wait up to batch_ms (from the first event) for a full batch."""
        size = sum(len(line) + 1 for line, _ in items)
        deadline = time.monotonic() + self._sink.batch_ms / 1000
        while len(items) < self._sink.batch_size and size < MAX_BATCH_BYTES and not self._stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._spool.wait_for_data(reader.pos, remaining)
            more = reader.read(self._sink.batch_size - len(items), MAX_BATCH_BYTES - size)
            items.extend(more)
            size += sum(len(line) + 1 for line, _ in more)

    def _deliver(self, items: list[tuple[bytes, Position]]) -> None:
        """Deliver ``items`` in order; returns once each is acknowledged or dead-lettered."""
        todo = deque([items])
        attempt = 0
        while todo:
            batch = todo.popleft()
            try:
                self._sink.send([line for line, _ in batch])
            except _Transient as e:
                if e.done:
                    self._acknowledged(batch[:e.done])
                    batch = batch[e.done:]
                todo.appendleft(batch)
                self._failed(e.reason)
                self._backoff(attempt, e.retry_after)
                attempt += 1
                continue
            except _Rejected as e:
                if e.index is not None:
                    if e.index:
                        self._acknowledged(batch[:e.index])
                    if e.index + 1 < len(batch):
                        todo.appendleft(batch[e.index + 1:])
                    batch = batch[e.index:e.index + 1]
                elif len(batch) > 1:
                    # find the event(s) the receiver refuses; deliver the rest, in order
                    half = len(batch) // 2
                    todo.appendleft(batch[half:])
                    todo.appendleft(batch[:half])
                    continue
                self._dead_letter(batch[0][0], e.reason)
            else:
                self._delivered += len(batch)
            self._recovered()
            attempt = 0
            self._commit(batch[-1][1])

    def _acknowledged(self, part: list[tuple[bytes, Position]]) -> None:
        self._delivered += len(part)
        self._commit(part[-1][1])

    def _dead_letter(self, line: bytes, reason: str) -> None:
        # kept in the state dir so that a rejected event is never lost, only set aside
        ensure_private_dir(self._dead_letter_path.parent)
        fd = os.open(self._dead_letter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self._dead_lettered += 1
        try:
            event_id = msgspec.json.decode(line, type=_IdOnly).id
        except msgspec.DecodeError:
            event_id = "(unreadable)"
        log.error("%s: the receiver rejected event %s (%s); set aside in %s",
                  self._sink.name, event_id, reason, self._dead_letter_path)

    def _failed(self, reason: str) -> None:
        now = time.monotonic()
        self._failures += 1
        if self._failures == 1 or reason != self._last_error:
            self._failing_since = self._failing_since or now
            self._last_reminder = now
            log.warning("%s: delivery failed (%s); retrying", self._sink.name, reason)
        elif now - self._last_reminder >= FAILURE_REMINDER_S:
            self._last_reminder = now
            log.warning("%s: still failing (%s) after %d attempts over %.0f s", self._sink.name, reason,
                        self._failures, now - self._failing_since)
        self._last_error = reason

    def _recovered(self) -> None:
        if self._failures:
            log.info("%s: delivering again after %d failed attempts", self._sink.name, self._failures)
            self._failures = 0
            self._failing_since = 0.0

    def _backoff(self, attempt: int, retry_after: float | None) -> None:
        cap = self._sink.retry_max_s
        delay = min(cap, BACKOFF_BASE_S * (2 ** min(attempt, 30)))
        delay *= self._rng.uniform(0.5, 1.0)      # jitter: many gateways must not retry in step
        if retry_after is not None:
            delay = max(delay, min(retry_after, cap))
        # stopping: a failing receiver is not waited for, the spool keeps the events
        if self._stop_event.wait(delay):
            raise _Stop


class _IdOnly(msgspec.Struct):
    id: str


# --------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------

def _sink_ids(sinks: list[AuditSink]) -> list[str]:
    """Stable names for cursor files: the type and a hash of the destination, so reordering the
    config or changing batch settings keeps each sink's cursor, and a new destination starts fresh."""
    ids: list[str] = []
    for cfg in sinks:
        dest = cfg.path or cfg.address or cfg.url or ""
        base = f"{cfg.type}-{hashlib.sha256(f'{cfg.type}|{dest}'.encode()).hexdigest()[:12]}"
        sid, n = base, 2
        while sid in ids:
            sid, n = f"{base}-{n}", n + 1
        ids.append(sid)
    return ids


def _make_sink(cfg: AuditSink, index: int, net_timeout_s: float) -> _Sink:
    name = f"audit[{index}] ({cfg.type})"
    if cfg.type == "jsonl":
        if not cfg.path:
            raise WiregateError(f"{name}: path is required")
        return _JsonlSink(name, Path(cfg.path))
    if cfg.type == "syslog":
        return _SyslogSink(name, cfg, net_timeout_s)
    if cfg.type == "webhook":
        return _WebhookSink(name, cfg, net_timeout_s)
    raise WiregateError(f"{name}: unknown audit sink type")


class _JsonlSink(_Sink):
    """Appends each event's JSON line to a file, fsynced before the cursor moves.

    Exactly once even across a crash: on (re)opening, the id on the file's last line tells how far
    the previous run got, and the first batch skips up to it.
    """

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self._path = path
        self._fd: int | None = None
        self._resume_id: str | None = None

    def send(self, lines: list[bytes]) -> None:
        try:
            fd = self._ensure_open()
            if self._resume_id is not None:
                lines = self._skip_written(lines)
            if not lines:
                return
            size = os.fstat(fd).st_size
            data = b"\n".join(lines) + b"\n"
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # take back a partial write so that the retry does not leave a torn line
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    self.close()
                raise
        except OSError as e:
            raise _Transient(type(e).__name__) from None

    def _ensure_open(self) -> int:
        # logrotate moves the file away: notice and start a new one at the configured path
        if self._fd is not None:
            try:
                if os.stat(self._path).st_ino == os.fstat(self._fd).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            self.close()
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)   # read: the last id
        try:
            self._resume_id = _last_id(fd)
            if self._resume_id == "":
                os.write(fd, b"\n")   # end a torn last line so the next event starts clean
                self._resume_id = None
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def _skip_written(self, lines: list[bytes]) -> list[bytes]:
        resume, self._resume_id = self._resume_id, None
        needle = b'{"id":' + msgspec.json.encode(resume) + b","
        for i, line in enumerate(lines):
            if line.startswith(needle) or line == needle[:-1] + b"}":
                return lines[i + 1:]
        return lines

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _last_id(fd: int) -> str | None:
    """The id on the file's last line; "" when the file ends with a torn line; None when empty."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
    if not tail.endswith(b"\n"):
        return ""
    start = tail.rfind(b"\n", 0, len(tail) - 1) + 1
    try:
        return msgspec.json.decode(tail[start:-1], type=_IdOnly).id
    except msgspec.DecodeError:
        return None


class _SyslogSink(_Sink):
    """RFC 5424 messages: the event id and session in structured data, the event's JSON as MSG.

    UDP: one datagram per event, at most UDP_MAX_BYTES (long strings shortened, see ``_fit``).
    TCP: octet-counting framing (RFC 6587), a batch per write; reconnects after any failure.
    """

    def __init__(self, name: str, cfg: AuditSink, net_timeout_s: float) -> None:
        self.name = name
        self.retry_max_s = cfg.retry_max_s
        parts = urlsplit(cfg.address or "")
        if parts.scheme not in ("udp", "tcp") or not parts.hostname:
            raise WiregateError(f'{name}: address must be "udp://host:514" or "tcp://host:601"')
        self._udp = parts.scheme == "udp"
        self._host = parts.hostname
        self._port = parts.port or (514 if self._udp else 601)
        self._timeout = net_timeout_s
        self._sock: socket.socket | None = None
        self._max = UDP_MAX_BYTES if self._udp else TCP_MAX_BYTES
        host = _UNPRINTABLE_RE.sub("", socket.gethostname())[:255]
        self._header_tail = f"{host or '-'} wiregate {os.getpid()}"

    def send(self, lines: list[bytes]) -> None:
        frames: list[bytes] = []
        bad: int | None = None
        for i, line in enumerate(lines):
            try:
                frames.append(syslog_message(line, self._header_tail, self._max))
            except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
                bad = i         # not an event we wrote (disk damage): set aside, never resent forever
                break
        self._send(frames)
        if bad is not None:
            raise _Rejected("not a JSON event", index=bad)

    def _send(self, frames: list[bytes]) -> None:
        if not frames:
            return
        if self._udp:
            for i, frame in enumerate(frames):
                try:
                    self._connect().send(frame)
                except OSError as e:
                    self.close()
                    raise _Transient(type(e).__name__, done=i) from None
            return
        data = b"".join(b"%d %b" % (len(frame), frame) for frame in frames)
        try:
            sock = self._connect()
            if _peer_closed(sock):
                # the receiver restarted: writing into the dead connection would lose the batch
                self.close()
                sock = self._connect()
            sock.sendall(data)
        except OSError as e:
            self.close()
            raise _Transient(type(e).__name__) from None

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        kind = socket.SOCK_DGRAM if self._udp else socket.SOCK_STREAM
        last: OSError = OSError("no address")
        for family, type_, proto, _, addr in socket.getaddrinfo(self._host, self._port, type=kind):
            sock = socket.socket(family, type_, proto)
            try:
                sock.settimeout(self._timeout)
                sock.connect(addr)
            except OSError as e:
                sock.close()
                last = e
                continue
            self._sock = sock
            return sock
        raise last

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def abort(self) -> None:
        _shutdown(self._sock)


def _peer_closed(sock: socket.socket) -> bool:
    # a syslog receiver never writes: readable means EOF or a reset
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def syslog_message(line: bytes, header_tail: str, max_bytes: int) -> bytes:
    """One RFC 5424 message for a spool line: ``<PRI>1 TIMESTAMP HOST wiregate PID MSGID [SD] BOM JSON``."""
    event = msgspec.json.decode(line)
    event_id = event["id"]
    severity = 4 if event.get("decision") == "deny" else 6
    kind = event.get("kind")
    msgid = _UNPRINTABLE_RE.sub("", kind)[:32] if isinstance(kind, str) else ""
    session = event_id.rpartition(":")[0]
    head = f"<{_FACILITY * 8 + severity}>1 {_rfc3339(event.get('time'))} {header_tail} {msgid or '-'} "
    params = f'id="{_sd_escape(event_id)}" session="{_sd_escape(session)}"'
    prefix = (head + f"[{_SD_ID} {params}] ").encode() + _BOM
    if len(prefix) + len(line) <= max_bytes:
        return prefix + line
    prefix = (head + f'[{_SD_ID} {params} truncated="{len(line)}"] ').encode() + _BOM
    return prefix + _fit(event, max_bytes - len(prefix))


def _fit(event: dict, budget: int) -> bytes:
    """The event's JSON within ``budget`` bytes, still valid JSON: long strings and lists are cut
    shorter and shorter, ``"truncated": true`` is added; at worst only id, kind and time remain."""
    limit = 1024
    while limit >= 8:
        small = _shorten(event, limit)
        small["truncated"] = True
        data = msgspec.json.encode(small)
        if len(data) <= budget:
            return data
        limit //= 4
    bare = {k: event[k] for k in ("id", "kind", "time") if k in event}
    bare["truncated"] = True
    data = msgspec.json.encode(bare)
    if len(data) <= budget:
        return data
    return msgspec.json.encode({"truncated": True})


def _shorten(value, limit: int, top: bool = True):
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…"
    if isinstance(value, dict):
        return {k: (v if top and k == "id" else _shorten(v, limit, False)) for k, v in value.items()}
    if isinstance(value, list):
        keep = max(1, limit // 16)
        return [_shorten(v, limit, False) for v in value[:keep]] + (["…"] if len(value) > keep else [])
    return value


def _sd_escape(value: str) -> str:
    return _SD_ESCAPE_RE.sub(r"\\\1", value)


def _rfc3339(t) -> str:
    if not isinstance(t, (int, float)) or isinstance(t, bool):
        return "-"
    try:
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (OverflowError, OSError, ValueError):
        return "-"


class _WebhookSink(_Sink):
    """POSTs JSON arrays of events; see docs/audit.md for how each answer is handled."""

    def __init__(self, name: str, cfg: AuditSink, net_timeout_s: float) -> None:
        self.name = name
        self.batch_size = cfg.batch_size
        self.batch_ms = cfg.batch_ms
        self.retry_max_s = cfg.retry_max_s
        parts = urlsplit(cfg.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WiregateError(f"{name}: url must be an http:// or https:// URL")
        if parts.username or parts.password:
            raise WiregateError(f"{name}: url must not hold credentials; set token_env instead")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = net_timeout_s
        self._token: Secret | None = None
        if cfg.token_env:
            value = os.environ.get(cfg.token_env)
            if not value:
                # fail closed: never send the audit trail unauthenticated to a receiver expecting a token
                raise WiregateError(f"{name}: token_env: environment variable {cfg.token_env} is not set or empty")
            self._token = Secret(value)
        self._ssl = ssl.create_default_context() if self._https else None
        self._conn: http.client.HTTPConnection | None = None

    def send(self, lines: list[bytes]) -> None:
        body = b"[" + b",".join(lines) + b"]"
        headers = {
            "Content-Type": "application/json",
            # same batch, same key: a receiver can drop a retried batch it already applied
            "Idempotency-Key": hashlib.sha256(body).hexdigest()[:32],
            "User-Agent": "wiregate-audit",
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        status, retry_after = self._post(body, headers)
        if 200 <= status < 300:
            return
        if status in (408, 429) or status >= 500:
            raise _Transient(f"HTTP {status}", retry_after=retry_after)
        if status in (400, 413, 422):
            raise _Rejected(f"HTTP {status}")
        # 3xx, 401, 403, 404, 405...: the receiver or its configuration is wrong, not this batch;
        # keep the events and retry until it is fixed
        raise _Transient(f"HTTP {status}")

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
        for fresh in (False, True):
            reused = self._conn is not None
            conn = self._conn or self._new_connection()
            self._conn = conn
            try:
                conn.request("POST", self._target, body, headers)
                resp = conn.getresponse()
                resp.read(64 << 10)
                if not resp.isclosed() or resp.will_close:
                    self.close()   # an oversized answer or a closing server: start clean next time
                return resp.status, _retry_after(resp.getheader("Retry-After"))
            except (OSError, http.client.HTTPException) as e:
                self.close()
                # a kept-alive connection the server dropped while idle: one immediate fresh try
                if reused and not fresh and isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError,
                                                           ConnectionResetError)):
                    continue
                raise _Transient(type(e).__name__) from None
        raise AssertionError("unreachable")

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        conn = self._conn
        if conn is not None:
            _shutdown(conn.sock)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _lock_folder(directory: Path) -> int:
    try:
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise WiregateError(f"{directory}: cannot open the audit spool: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WiregateError(f"{directory}: another audit exporter (another wiregate process?) "
                            f"uses this state dir") from None
    return fd
