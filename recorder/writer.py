"""The recorder: events from the event loop to the session files, off the data path.

The data path calls ``SessionRecorder.record`` (non-blocking: a bounded queue), ONE writer thread
takes whatever is queued, appends it to the session files, fsyncs by policy, seals a file when its
session ends, updates the index, and then hands each event to the audit sinks.

Guarantees (docs/recording.md, "The writer"):

* ``record`` returning True means queued, nothing more. ``synced()`` is the acknowledgement: a
  future that resolves True once everything the session queued before it is written (and fsynced
  unless ``fsync = "never"``). With ``fsync = "always"`` (``sync_required``) the caller awaits it
  before letting the command through; the writer then does not wait ``batch_ms`` between batches
  (commands that arrive during one fsync share the next: group commit).
* Per session, events reach the file in the order ``record`` was called (one FIFO, one writer).
* Fail closed: after any write error (disk full, EIO, permission) the recorder is unhealthy for
  good: every ``record`` returns False and the error is logged once. Nothing is lost silently:
  a refused event is the caller's to refuse (``on_record_failure = "refuse"``) and is counted in
  the log, and in the file itself as an ``EventsLost`` frame when the session's next event gets
  through; events that were queued when the disk failed are counted in the log.
* The log never holds an event's content: only counts, session ids, paths and error codes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.config import RecordingSection
from gateway.keys import ed25519_key_id, ensure_private_dir
from recorder.events import EVENT_TYPES, Command, EventsLost, SessionEnd, SessionStart, event_to_json
from recorder.format import SessionFile, check_session_id, recording_path
from recorder.index import Index, SessionRow

log = logging.getLogger("wiregate.recorder")

# at most one report of refused or dropped events this often (seconds)
REPORT_EVERY = 10.0
# the index's counters of running sessions lag their files by at most this many seconds
INDEX_EVERY = 1.0
STOPPED_REASON = "the gateway stopped before the session ended"
_EVENT_TYPES = frozenset(EVENT_TYPES)


class Sinks(Protocol):
    def publish(self, event_id: str, event: dict[str, Any]) -> None: ...


class _Sync:
    """A queue marker: settle ``future`` once everything queued before it is on disk."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.loop = loop
        self.future = future


class _Open:
    """The writer's side of one session: its file and its index row."""

    __slots__ = ("file", "row")

    def __init__(self, file: SessionFile, row: SessionRow):
        self.file = file
        self.row = row


class SessionRecorder:
    """One session's handle, used from the event loop. See the module docstring."""

    __slots__ = ("_rec", "session_id", "_open", "_started", "lost", "_lost_pending", "labels")

    def __init__(self, recorder: Recorder, session_id: str, labels: tuple[str, str] = ("", "")):
        self._rec = recorder
        self.session_id = session_id
        # (protocol, target), for the metrics
        self.labels = labels
        self._open = False  # started and not ended
        self._started = False
        self.lost = 0  # events of this session that were refused
        self._lost_pending = 0  # refused since the last event that got through

    @property
    def writable(self) -> bool:
        """Whether events are being recorded: the session started, has not ended, the recorder works."""
        return self._open and self._rec.healthy

    @property
    def sync_required(self) -> bool:
        """``fsync = "always"``: await ``synced()`` after recording a command, before running it."""
        return self._rec.cfg.fsync == "always"

    def record(self, event: Any) -> bool:
        """Queue ``event`` for this session; never blocks. False: not queued (queue full, recorder
        failed or stopped, session ended) — the caller refuses the command unless
        ``on_record_failure = "continue"``."""
        if type(event) is SessionEnd:
            return self.end(event)
        rec = self._rec
        queue = rec._queue
        with rec._lock:
            if not self._open or not rec._running or rec._failure is not None:
                queued = False
            elif self._lost_pending:
                queued = len(queue) + 1 < rec._limit
                if queued:
                    queue.append((self, EventsLost(time=time.time(), count=self._lost_pending,
                                                   reason="the recorder's queue was full")))
                    queue.append((self, event))
                    self._lost_pending = 0
            else:
                queued = len(queue) < rec._limit
                if queued:
                    queue.append((self, event))
            if not queued:
                self._refused()
        if queued and not rec._wake.is_set():
            rec._wake.set()
        return queued

    def end(self, end: SessionEnd) -> bool:
        """Queue the session's end; the writer seals the file after it. An end is queued even when
        the queue is full (it may exceed ``queue_size`` by one per ending session). False when it
        was not queued (ended already, recorder failed or stopped)."""
        rec = self._rec
        with rec._lock:
            if not self._open:
                return False
            self._open = False
            rec._active.discard(self.session_id)
            if rec.metrics is not None:
                rec.metrics.session_closed(*self.labels, end.bytes_in, end.bytes_out)
            queued = rec._running and rec._failure is None
            if queued:
                if self._lost_pending:
                    rec._queue.append((self, EventsLost(time=end.time, count=self._lost_pending,
                                                        reason="the recorder's queue was full")))
                    self._lost_pending = 0
                rec._queue.append((self, end))
        if queued:
            rec._wake.set()
        return queued

    def synced(self) -> asyncio.Future[bool]:
        """A future (of the running loop) that becomes True once every event this session queued
        so far is written (and fsynced unless ``fsync = "never"``), False if the recorder fails
        first or cannot take the request. Await it, or add a done callback."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        rec = self._rec
        with rec._lock:
            queued = self._started and rec._running and rec._failure is None
            if queued:
                rec._queue.append((self, _Sync(loop, future)))
        if queued:
            rec._wake.set()
        else:
            future.set_result(False)
        return future

    def _refused(self) -> None:
        """Count a refused event (under the recorder's lock: callers may be on several threads)."""
        rec = self._rec
        self.lost += 1
        if self._open:
            self._lost_pending += 1
        if rec._running and rec._failure is None:
            rec._refused_full += 1
        else:
            rec._refused_down += 1


class Recorder:
    """Owned by the server: ``start()`` once, ``open()`` per session, ``stop()`` at the end.

    ``stop`` refuses new events, lets the writer write everything queued (ended sessions get
    sealed), then ends and seals every session that is still open with a ``SessionEnd`` whose
    reason is ``STOPPED_REASON`` (its byte counts are 0: the recorder does not know them), so a
    clean shutdown leaves only sealed files and an unsealed file always means a crash.
    """

    def __init__(self, state_dir: Path, cfg: RecordingSection, key: Ed25519PrivateKey, *, instance: str,
                 sinks: Sinks | None = None):
        self.state_dir = Path(state_dir)
        self.cfg = cfg
        self.instance = instance
        self.key_id = ed25519_key_id(key.public_key())
        self._key = key
        self._sinks = sinks
        self._limit = max(1, cfg.queue_size)
        self._queue: deque[tuple[SessionRecorder, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = False
        self._failure: str | None = None
        self._active: set[str] = set()
        # sessions open/total and bytes proxied (gateway/metrics.py); set by the server
        self.metrics: Any = None
        # the shared store's copy of the sessions index (gateway/store.py), called by the writer thread
        self.mirror: Callable[[Sequence[SessionRow]], None] | None = None
        # counters: refused_* are written by the loop side only, the rest by the writer only
        self._refused_full = 0
        self._refused_down = 0
        self._dropped = 0
        self._sink_failures = 0
        self.events_written = 0
        self.batches = 0
        self.bytes_written = 0
        # writer thread only
        self._files: dict[SessionRecorder, _Open] = {}
        self._dirs: set[Path] = set()
        self._index: Index | None = None
        # index rows changed since the index was last written, and when it is next due: a
        # transaction per batch costs more than the batch itself under load
        self._index_dirty: dict[str, SessionRow] = {}
        self._index_due = 0.0
        self._reported = (0, 0, 0, 0)
        self._last_report = float("-inf")

    @property
    def healthy(self) -> bool:
        """Running and no write has failed."""
        return self._running and self._failure is None

    @property
    def failure(self) -> str | None:
        """Why the recorder stopped recording (None while it works)."""
        return self._failure

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Create what is missing (recordings dir, index) and start the writer thread.
        Raises ``WiregateError`` when the state dir cannot hold recordings."""
        if self._thread is not None:
            raise RuntimeError("the recorder was started already")
        ensure_private_dir(self.state_dir / "recordings")
        self._index = Index(self.state_dir)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="wiregate-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Write what is queued, seal every open session, close. Waits at most ``timeout`` seconds."""
        with self._lock:
            self._running = False  # under the lock: no event is queued after the writer's last look
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("recorder: the writer did not finish within %.0fs; %d events may not be written",
                          timeout, len(self._queue))

    def open(self, start: SessionStart) -> SessionRecorder:
        """Queue a session's start. The returned handle is not ``writable`` when the start could not
        be queued (the caller refuses the session unless ``on_record_failure = "continue"``)."""
        check_session_id(start.session_id)
        session = SessionRecorder(self, start.session_id, (start.protocol, start.target))
        with self._lock:
            if start.session_id in self._active:
                raise ValueError(f"session {start.session_id} is being recorded already")
            queued = self._running and self._failure is None and len(self._queue) < self._limit
            if queued:
                self._queue.append((session, start))
                session._open = session._started = True
                self._active.add(start.session_id)
                if self.metrics is not None:
                    self.metrics.session_opened(start.protocol, start.target)
            else:
                session._refused()
        if queued:
            self._wake.set()
        return session

    # ------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        # with "always" a caller waits for each batch's fsync: waiting longer helps nobody
        interval = 0.0 if self.cfg.fsync == "always" else self.cfg.batch_ms / 1000
        last = float("-inf")
        try:
            while True:
                self._wake.wait(REPORT_EVERY)
                if not self._stop.is_set():
                    delay = last + interval - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)  # gather a batch; stop() cuts it short
                self._wake.clear()
                queue = self._queue
                items = [queue.popleft() for _ in range(len(queue))]
                last = time.monotonic()
                if items:
                    self._write_batch(items)
                self._report()
                if self._stop.is_set() and not queue:
                    break
            self._seal_open_sessions()
        except Exception as e:  # a bug: fail closed rather than let the data path run unrecorded
            self._fail("the recordings", f"internal error {type(e).__name__}")
            log.debug("recorder: internal error", exc_info=True)
        finally:
            self._close_all()
            if self._index is not None:
                if self._failure is None:
                    try:
                        self._flush_index(time.monotonic())
                    except sqlite3.Error as e:
                        self._fail(str(self._index.path), _describe(e))
                self._index.close()
            self._report(final=True)

    def _write_batch(self, items: list[tuple[SessionRecorder, Any]]) -> None:
        if self._failure is not None:
            self._discard(items)
            return
        touched: dict[SessionRecorder, _Open] = {}
        written: list[tuple[str, int, Any]] = []
        syncs: list[_Sync] = []
        dirs: set[Path] = set()  # directories with new entries
        ended: list[SessionRecorder] = []
        where: object = "the recordings"  # what the log names when a write fails
        try:
            for session, payload in items:
                if type(payload) is _Sync:
                    syncs.append(payload)
                    continue
                opened = self._files.get(session)
                if opened is None:
                    if type(payload) is not SessionStart:  # after the seal: a caller's bug
                        self._late(session, payload)
                        continue
                    path = recording_path(self.state_dir, payload.session_id, payload.time)
                    where = path
                    opened = self._create(session, payload, path, dirs)
                elif type(payload) is SessionStart:
                    payload = self._unrecordable(session, payload, "a second session start")
                where = opened.file.path
                touched[session] = opened
                seq = opened.file.frames
                if type(payload) not in _EVENT_TYPES:
                    payload = self._unrecordable(session, payload, "not an event")
                try:
                    opened.file.append(payload)
                except ValueError as e:  # a caller's bug: leave a trace of it in the evidence
                    payload = self._unrecordable(session, payload, str(e))
                    opened.file.append(payload)
                written.append((session.session_id, seq, payload))
                row = opened.row
                kind = type(payload)
                if kind is Command:
                    row.commands += 1
                    row.denied += payload.decision == "deny"
                elif kind is SessionEnd:
                    row.ended, row.end_reason = payload.time, payload.reason
                    row.seal = opened.file.seal(self._key)
                    row.sealed = True
                    written.append((session.session_id, seq + 1, row.seal))
                    ended.append(session)
                row.frames = opened.file.frames
            fsync = self.cfg.fsync != "never"
            for opened in touched.values():
                where = opened.file.path
                self.bytes_written += opened.file.pending
                opened.file.flush(fsync)
            if fsync:
                for d in dirs:
                    where = d
                    _fsync_dir(d)
            where = self._index.path  # type: ignore[union-attr]
            for opened in touched.values():
                self._index_dirty[opened.row.id] = opened.row
            # sessions that start or end show at once; running counters follow within INDEX_EVERY
            now = time.monotonic()
            if dirs or ended or now >= self._index_due:
                self._flush_index(now)
        except (OSError, sqlite3.Error) as e:
            self._fail(str(where), _describe(e), unwritten=sum(type(p) is not _Sync for _, p in items))
            for _, payload in items:
                if type(payload) is _Sync:
                    _settle(payload, False)
            return
        for session in ended:
            self._files.pop(session).file.close()
        self.events_written += len(written)
        self.batches += 1
        if self._sinks is not None:
            self._publish(written)
        for sync in syncs:
            _settle(sync, True)

    def _flush_index(self, now: float) -> None:
        if self._index_dirty:
            self._index.upsert_sessions(self._index_dirty.values())  # type: ignore[union-attr]
            if self.mirror is not None:
                self.mirror(list(self._index_dirty.values()))
            self._index_dirty.clear()
        self._index_due = now + INDEX_EVERY

    def _create(self, session: SessionRecorder, start: SessionStart, path: Path, dirs: set[Path]) -> _Open:
        day = path.parent
        if day not in self._dirs:
            try:
                os.mkdir(day, 0o700)
                dirs.add(day.parent)
            except FileExistsError:
                pass
            self._dirs.add(day)
        try:
            file = SessionFile(path, start.session_id)
        except FileNotFoundError:  # the day's directory was removed under us (retention cleanup)
            os.makedirs(day, 0o700, exist_ok=True)
            dirs.update((day.parent, day.parent.parent))
            file = SessionFile(path, start.session_id)
        opened = _Open(file, SessionRow(
            id=start.session_id, identity=start.identity, groups=start.groups, target=start.target,
            protocol=start.protocol, client=start.client, tls=start.tls, instance=start.instance,
            auth=start.auth, started=start.time, path=str(path)))
        dirs.add(day)
        self._files[session] = opened
        return opened

    def _unrecordable(self, session: SessionRecorder, payload: Any, why: str) -> EventsLost:
        # the type and msgspec's reason only: no field values
        log.error("recorder: session %s: a %s event cannot be recorded (%s); an events_lost frame stands in for it",
                  session.session_id, type(payload).__name__, why)
        return EventsLost(time=time.time(), count=1, reason=f"a {type(payload).__name__} event could not be encoded")

    def _publish(self, written: list[tuple[str, int, Any]]) -> None:
        sinks = self._sinks
        for session_id, seq, event in written:
            body = event_to_json(event)
            out = {"kind": body.pop("kind"), "session_id": session_id, "seq": seq}
            out.update(body)
            try:
                sinks.publish(f"{session_id}:{seq}", out)  # type: ignore[union-attr]
            except Exception as e:
                if not self._sink_failures:
                    log.error("recorder: the audit export refused event %s:%d (%s); further refusals are counted",
                              session_id, seq, type(e).__name__)
                self._sink_failures += 1

    def _seal_open_sessions(self) -> None:
        if self._failure is not None or not self._files:
            return
        now = time.time()
        self._write_batch([(session, SessionEnd(time=now, reason=STOPPED_REASON, commands=o.row.commands,
                                                bytes_in=0, bytes_out=0))
                           for session, o in list(self._files.items())])

    def _fail(self, where: str, reason: str, unwritten: int = 0) -> None:
        if self._failure is not None:
            return
        self._failure = f"{where}: {reason}"
        log.error("recorder: cannot write %s (%s): recording has stopped and every new event is refused "
                  "(on_record_failure decides whether commands still run); the last batch of %d events may be "
                  "partly written", where, reason, unwritten)
        self._close_all()

    def _late(self, session: SessionRecorder, payload: Any) -> None:
        log.error("recorder: session %s: a %s event after the session's end is dropped",
                  session.session_id, type(payload).__name__)
        self._dropped += 1

    def _discard(self, items: list[tuple[SessionRecorder, Any]]) -> None:
        for _, payload in items:
            if type(payload) is _Sync:
                _settle(payload, False)
            else:
                self._dropped += 1

    def _close_all(self) -> None:
        for opened in self._files.values():
            try:
                opened.file.close()
            except OSError:
                pass
        self._files.clear()

    def _report(self, final: bool = False) -> None:
        """Log refused and dropped events (counts only), at most every ``REPORT_EVERY`` seconds."""
        now = time.monotonic()
        counts = (self._refused_full, self._refused_down, self._dropped, self._sink_failures)
        if counts == self._reported or (not final and now - self._last_report < REPORT_EVERY):
            return
        full, down, dropped, sinks = (a - b for a, b in zip(counts, self._reported))
        parts = []
        if full:
            parts.append(f"{full} refused because the queue was full (the writer is behind)")
        if down:
            parts.append(f"{down} refused because the recorder is not recording")
        if dropped:
            parts.append(f"{dropped} queued but dropped after the recorder failed")
        if sinks:
            parts.append(f"{sinks} recorded but refused by the audit export")
        log.warning("recorder: events not recorded since the last report: %s", "; ".join(parts))
        self._reported = counts
        self._last_report = now


def _settle(sync: _Sync, ok: bool) -> None:
    try:
        sync.loop.call_soon_threadsafe(_set_result, sync.future, ok)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _set_result(future: asyncio.Future, ok: bool) -> None:
    if not future.done():
        future.set_result(ok)


def _describe(error: OSError | sqlite3.Error) -> str:
    """An error as the log shows it: its code and text (never data)."""
    if isinstance(error, OSError):
        code = errno.errorcode.get(error.errno or 0, "")
        return f"{code}: {error.strerror}" if code else (error.strerror or type(error).__name__)
    return f"{type(error).__name__}: {error}"


def _fsync_dir(path: Path) -> None:
    """Make a directory's new entries durable (a new file is lost in a power cut without it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
