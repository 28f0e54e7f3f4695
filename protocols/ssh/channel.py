"""One SSH session channel through the gateway: shell, exec or sftp, relayed to the target.

The client's channel (asyncssh ``SSHServerSession``) and the gateway's channel to the target
(``SSHClientSession``) are two halves of one relay; this module is the glue that moves bytes
between them, applies backpressure both ways (a full write buffer on one side pauses reading
on the other) and hands the traffic to the codecs and the policy core:

* exec: the command line is decided before anything runs (``Command(kind="exec")``); a denied
  one gets one line on stderr and exit status 126, as a shell reports "cannot execute". A
  command that is a file transfer (legacy scp, rsync, sftp-server; ``transfer.classify``) is
  also checked as the file operations it performs (``Command(kind="file")``).
* shell with a PTY: every line typed at the prompt is checked when Enter is pressed
  (``terminal.LineTracker``); a denied line never reaches the shell, which is told to drop it.
  The terminal stream, masked, is recorded for replay.
* shell without a PTY (``ssh host < script``): each line of stdin is checked as a command.
* sftp: each operation is checked and recorded (``sftp.SftpInspector``).

Output (stdout, stderr, the terminal) goes through the mask rules' detectors
(``outmask.StreamMasker``) before it reaches the client or the recording, except file
transfer streams, which are binary and cannot be masked: with detector mask rules in force
downloads are refused instead.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import time
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.constants import EXTENDED_DATA_STDERR

from gateway.broker import held_message
from gateway.errors import raised_at
from policy.model import UNRECORDABLE, Command, Decision, review_refusal
from protocols.ssh import transfer
from protocols.ssh.outmask import StreamMasker
from protocols.ssh.scprelay import ScpRelay
from protocols.ssh.sftp import SftpError, SftpInspector, normalize_path
from protocols.ssh.terminal import Enter, LineTracker
from protocols.ssh.transfer import ScpDone, ScpError, ScpStream
from protocols.ssh.upstream import UpstreamError
from recorder import events as rec
from recorder.capture import new_session_id, recorded_text

if TYPE_CHECKING:
    from protocols.ssh.server import SshConnection

log = logging.getLogger("wiregate.ssh")

DENIED_EXIT = 126  # what a shell reports for a command it found but cannot execute
GATEWAY_EXIT = 255  # what ssh itself reports when the connection fails
MASK_QUIET_S = 0.01  # a held partial output line is released after this much quiet
# a held Enter waits for the echo of its line: output quiet this long, at most ECHO_MAX_S
ECHO_QUIET_S = 0.02
ECHO_MAX_S = 0.5
# environment variables passed on to the target: locale only (sshd's own default AcceptEnv)
_PASSED_ENV = ("LANG", "LC_")
# kinds of policy command that an SFTP or transfer operation produces, per operation
_IMPLIED = {"rename": ("write", "remove"), "link": ("write",), "symlink": ("write",)}


def file_commands(op: str, path: str, path2: str | None) -> list[str]:
    """The policy texts one file operation is checked as: itself, and for operations that
    create or drop a name elsewhere, the plain ``write`` / ``remove`` they amount to (so
    ``write /etc/*`` also covers a rename into /etc)."""
    texts = [f"{op} {path}" if path2 is None else f"{op} {path} {path2}"]
    for implied in _IMPLIED.get(op, ()):
        texts.append(f"{implied} {path2 if implied == 'write' and path2 is not None else path}")
    return texts


def _resolve(path: str, home: str) -> str:
    """A path as the target's shell and file system see it: ``~`` and relative paths start at the
    login user's home."""
    if path == "~" or path.startswith("~/"):
        path = home + path[1:]
    return normalize_path(posixpath.join(home, path))


class SessionChannel(asyncssh.SSHServerSession):
    """The client's half: one instance per session channel."""

    def __init__(self, owner: "SshConnection"):
        self.owner = owner
        self.chan: asyncssh.SSHServerChannel | None = None
        self.up: asyncssh.SSHClientChannel | None = None
        self.kind = "shell"
        self.command: str | None = None
        self.term: tuple[str, tuple[int, int, int, int], dict] | None = None
        self.session_id = new_session_id()
        self.recording = None
        self.started = time.time()
        self.bytes_in = 0
        self.bytes_out = 0
        self.commands = 0
        self.exit_status: int | None = None
        self.exit_signal: tuple | None = None
        self.closed = False
        # an exec command waiting for its approval
        self._approval: asyncio.Future | None = None
        self.end_reason = "client closed the channel"
        scans = owner.policy.masks.scans if owner.policy is not None else ()
        self.scans = scans
        self.maskers: dict[int, StreamMasker] = {}
        self._flush_timers: dict[int, asyncio.TimerHandle] = {}
        self.tracker: LineTracker | None = None
        self.sftp: SftpInspector | None = None
        self.transfer: transfer.FileTransfer | None = None
        self.scp: ScpRelay | None = None
        self.record_output = True
        self._stdin_line = bytearray()  # a shell without PTY: the line being read
        self._pending: list[tuple[bytes, int]] = []  # client data that arrived before the target channel
        self._held: list[bytes] = []  # client data waiting behind a held Enter
        self._waiting = False
        # monotonic times of the last keystroke sent to the target and of the last output from it
        self._typed_at = 0.0
        self._output_at = 0.0

    # ---- requests from the client --------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: dict) -> bool:
        self.term = (term_type, term_size, dict(term_modes))
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.kind = "exec"
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self.kind = "sftp"
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        self.chan.pause_reading()
        self.owner.spawn(self._start())

    async def _start(self) -> None:
        chan = self.chan
        assert chan is not None
        self._open_recording()
        if self.term is not None:
            _, (cols, rows, _, _), _ = self.term
            self._record(rec.TermResize(time=time.time(), cols=cols, rows=rows))
        if self.kind == "exec":
            if not await self._decide_exec(self.command or ""):
                return
        elif self.kind == "sftp":
            try:
                self.sftp = SftpInspector(cwd=await self.owner.home())
            except UpstreamError as e:
                self._fail(str(e), e.__cause__)
                return
            self.record_output = False
        if self.kind == "shell":
            self.tracker = LineTracker() if self.term is not None else None
        try:
            upstream = await self.owner.upstream()
            env = {k: v for k, v in chan.get_environment().items() if k.startswith(_PASSED_ENV)}
            term_type, term_size, term_modes = self.term if self.term is not None else (None, (0, 0, 0, 0), {})
            self.up, _ = await upstream.create_session(
                lambda: UpstreamSide(self), command=self.command if self.kind == "exec" else None,
                subsystem="sftp" if self.kind == "sftp" else None, env=env,
                request_pty=self.term is not None, term_type=term_type, term_size=term_size,
                term_modes=term_modes, encoding=None)
        except UpstreamError as e:
            self._fail(str(e), e.__cause__)
            return
        except (asyncssh.Error, OSError) as e:
            self._fail(f'wiregate: target "{self.owner.target.name}" refused the session: '
                       f"{getattr(e, 'reason', None) or e}")
            return
        if self.closed:
            self.up.close()
            return
        pending, self._pending = self._pending, []
        for data, datatype in pending:
            self._from_client(data, datatype)
        if not self._waiting:
            chan.resume_reading()

    def data_received(self, data: bytes, datatype: int | None) -> None:
        self.bytes_in += len(data)
        if self.up is None:
            self._pending.append((data, datatype))
            return
        try:
            self._from_client(data, datatype)
        except Exception as exc:  # a bug here must end this channel, not the whole connection
            self.internal_error(exc)

    def internal_error(self, exc: BaseException) -> None:
        """Log where a bug struck (never the data) and end the channel, fail closed."""
        where = raised_at(exc)
        log.error("ssh session %s: internal error %s at %s; closing the channel", self.session_id,
                  type(exc).__name__, where)
        self.end_reason = f"internal error ({type(exc).__name__})"
        if self.up is not None:
            self.up.close()
        if self.chan is not None:
            self.chan.close()

    def eof_received(self) -> bool:
        if self.up is None:
            self._pending.append((b"", -1))
            return True
        self._client_eof()
        return True

    def break_received(self, msec: int) -> bool:
        if self.up is not None:
            self.up.send_break(msec)
            return True
        return False

    def signal_received(self, signal: str) -> None:
        if self.up is not None:
            self.up.send_signal(signal)

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.term is not None:
            self.term = (self.term[0], (width, height, pixwidth, pixheight), self.term[2])
        if self.up is not None:
            self.up.change_terminal_size(width, height, pixwidth, pixheight)
        self._record(rec.TermResize(time=time.time(), cols=width, rows=height))

    def pause_writing(self) -> None:
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._approval is not None:
            self._approval.cancel()  # withdraws the request
        for timer in self._flush_timers.values():
            timer.cancel()
        if self.sftp is not None:
            # handles still open and requests never answered: recorded as failed operations
            try:
                for done in self.sftp.finish():
                    self._record_transfer(done)
            except SftpError:
                pass
        if self.up is not None:
            self.up.close()
        self._end()
        self.owner.channel_closed(self)

    # ---- client -> target ----------------------------------------------------------------

    def _from_client(self, data: bytes, datatype: int | None) -> None:
        if datatype == -1:
            self._client_eof()
        elif self._waiting:
            self._held.append(data)
        elif self.sftp is not None:
            self._sftp_from_client(data)
        elif self.scp is not None:
            self._scp(data, from_client=True)
        elif self.tracker is not None:
            self._typed(self.tracker.input(data))
        elif self.kind == "shell":
            self._script(data)
        else:
            self.up.write(data)

    def _client_eof(self) -> None:
        if self.kind == "shell" and self.tracker is None and self._stdin_line:
            line, self._stdin_line = bytes(self._stdin_line), bytearray()
            self._script_line(line)
        if self.up is not None:
            self.up.write_eof()

    def _typed(self, pieces: list[Any]) -> None:
        for i, piece in enumerate(pieces):
            if not isinstance(piece, Enter):
                self.up.write(piece.data)
                self._typed_at = time.monotonic()
                continue
            line = piece.line
            caught_up = self._output_at > self._typed_at
            if caught_up and not (self.recording is not None and self.recording.sync_required):
                self._enter(piece, self._check_line(line.candidates, line.shown))
                continue
            # the echo of what was just typed is not in yet (typed ahead, pasted, scripted), or
            # the command's record must be on disk first: hold this Enter and what follows
            self._waiting = True
            self.chan.pause_reading()
            self.owner.spawn(self._held_enter(piece, pieces[i + 1:], caught_up))
            return

    async def _held_enter(self, enter: Enter, rest: list[Any], caught_up: bool) -> None:
        if not caught_up:
            await self._echo_settled()
            if self.closed:
                return
            enter = self.tracker.settle(enter)
        decision = self._check_line(enter.line.candidates, enter.line.shown)
        if decision.allowed and self.recording is not None and self.recording.sync_required:
            if not await self.recording.synced() and self.owner.listener.on_record_failure == "refuse":
                decision = UNRECORDABLE
            if self.closed:
                return
        self._waiting = False
        self._enter(enter, decision)
        self._typed(rest)
        while self._held and not self._waiting:
            self._from_client(self._held.pop(0), None)
        if not self._waiting:
            self.chan.resume_reading()

    async def _echo_settled(self) -> None:
        """Wait until the target's output has been quiet for ``ECHO_QUIET_S`` after the last
        keystroke went out, or ``ECHO_MAX_S`` when nothing echoes (a password prompt)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ECHO_MAX_S
        while loop.time() < deadline:
            await asyncio.sleep(ECHO_QUIET_S)
            if self._output_at > self._typed_at and time.monotonic() - self._output_at >= ECHO_QUIET_S:
                return

    def _enter(self, enter: Enter, decision: Decision) -> None:
        if decision.allowed:
            self.up.write(enter.raw)
        else:
            self.up.write(LineTracker.cancel_bytes)
            self._tell(f"\r\n{decision.message}\r\n".encode())
        self._typed_at = time.monotonic()

    def _script(self, data: bytes) -> None:
        """A shell reading commands from stdin: each line is a command."""
        buf = self._stdin_line
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            self._script_line(bytes(buf[start:end + 1]))
            start = end + 1
        del buf[:start]

    def _script_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "surrogateescape").rstrip("\r\n")
        decision = self._check_line((text,) if text.strip() else (), text)
        if decision.allowed:
            self.up.write(line)
        else:
            self._tell(f"{decision.message}\n".encode(), stderr=True)

    def _check_line(self, candidates: tuple[str, ...] | list[str], shown: str) -> Decision:
        """Decide a command line typed at a shell: denied when any reading of it is denied."""
        decision = Decision(action="allow")
        for text in candidates:
            d = self._decide("exec", text)
            if not d.allowed:
                decision = d
                break
        if candidates:
            decision = self._recorded_or_refused("exec", shown, decision)
        return decision

    def _recorded_or_refused(self, kind: str, text: str, decision: Decision) -> Decision:
        """Record a command; an allowed one that cannot be recorded is refused (fail closed)
        unless ``on_record_failure = "continue"``."""
        if self._record_command(kind, text, decision) or not decision.allowed \
                or self.owner.listener.on_record_failure == "continue":
            return decision
        return UNRECORDABLE

    def _sftp_from_client(self, data: bytes) -> None:
        insp = self.sftp
        try:
            for pkt in insp.client_framer.feed(data):
                req = insp.client_packet(pkt)
                if req.unsupported:
                    self.chan.write(insp.unsupported(req))
                    continue
                op = req.op
                if op is not None:
                    decision = self._decide_file(op.op, op.path, op.path2)
                    if decision.allowed and req.reads and self.scans:
                        decision = self._download_refused(op.path)
                    if not decision.allowed:
                        self._record_command("file", op.command, decision)
                        self.chan.write(insp.refuse(req, decision.message))
                        continue
                self.up.write(pkt)
        except SftpError as e:
            self._protocol_error(f"wiregate: SFTP protocol error from the client: {e}")

    # ---- policy ---------------------------------------------------------------------------

    def _decide(self, kind: str, text: str, *, hold: bool = False) -> Decision:
        """``hold``: a review decision is returned as such, for the caller to wait for an
        approval; otherwise it is refused (approvals hold exec commands only)."""
        owner = self.owner
        decision = owner.policy.check(Command(protocol="ssh", target=owner.target.name, kind=kind, text=text))
        if decision.action == "review" and not (hold and owner.listener.broker is not None):
            decision = Decision(action="review", rule=decision.rule, message=review_refusal(decision, "the command"))
        if decision.allowed and self.recording is not None and not self.recording.writable \
                and owner.listener.on_record_failure == "refuse":
            return UNRECORDABLE
        return decision

    async def _await_approval(self, command: str, decision: Decision) -> Decision:
        """Hold an exec command for an approval (gateway/broker.py): a line on stderr names the
        request; the command runs once approved. Closing the channel withdraws the request."""
        owner = self.owner
        self._approval = asyncio.ensure_future(owner.listener.broker.review(
            requester=owner.identity.name, groups=owner.identity.groups, session_id=self.session_id,
            protocol="ssh", target=owner.target.name, kind="exec", text=command,
            recorded=recorded_text(command, self.scans), rule=decision.rule, announce=self._announce,
            record=self._record))
        try:
            verdict = await self._approval
        finally:
            self._approval = None
        return verdict.decision(decision.rule)

    def _announce(self, record: Any) -> None:
        self._tell(f"{held_message(record, self.owner.listener.admin_url)}\n".encode(), stderr=True)

    def _decide_file(self, op: str, path: str, path2: str | None) -> Decision:
        for text in file_commands(op, path, path2):
            decision = self._decide("file", text)
            if not decision.allowed:
                return decision
        if op == "read" and self.scans:
            return self._download_refused(path)
        return Decision(action="allow")

    def _download_refused(self, path: str) -> Decision:
        rules = ", ".join(f'"{n}"' for n in self.owner.policy.mask_rules)
        return Decision(action="deny", rule=self.owner.policy.mask_rules[0],
                        message=f"wiregate: blocked by mask rules {rules}: downloading {path} cannot be "
                                "masked (file contents are binary to the gateway)")

    async def _decide_exec(self, command: str) -> bool:
        decision = self._decide("exec", command, hold=True)
        held = decision.action == "review"
        if held:
            decision = self._recorded_or_refused("exec", command, decision)
            if decision.action == "review":
                decision = await self._await_approval(command, decision)
        self.transfer = transfer.classify(command)
        if decision.allowed and self.transfer is None and transfer.looks_like_transfer(command) and \
                (self.scans or any(r.file is not None for r in self.owner.policy.rules)):
            decision = Decision(action="deny", message=(
                "wiregate: this file transfer cannot be checked file by file (its paths use shell globs, "
                "variables or ~user, or options the gateway does not read): name the files plainly"))
        if decision.allowed and self.transfer is not None:
            self.record_output = False
            try:
                home = await self.owner.home()
            except UpstreamError as e:
                self._fail(str(e), e.__cause__)
                return False
            for op_text in self.transfer.ops:
                op, _, path = op_text.partition(" ")
                decision = self._decide_file(op, _resolve(path, home), None)
                if not decision.allowed:
                    break
            if self.transfer.tool == "sftp":
                self.sftp = SftpInspector(cwd=home)
            elif self.transfer.tool == "scp" and self.transfer.paths:
                upload = self.transfer.direction == "upload"
                base = _resolve(self.transfer.paths[0], home)
                self.scp = ScpRelay(ScpStream(base if upload else posixpath.dirname(base)), upload=upload,
                                    decide=self._scp_decide, done=self._scp_done)
        if not held:
            decision = self._recorded_or_refused("exec", command, decision)
        if decision.allowed and self.recording is not None and self.recording.sync_required:
            if not await self.recording.synced() and self.owner.listener.on_record_failure == "refuse":
                decision = UNRECORDABLE
        if decision.allowed:
            return True
        self._tell(f"{decision.message}\n".encode(), stderr=True)
        self._finish_exit(DENIED_EXIT, reason="command refused")
        return False

    def _scp(self, data: bytes, *, from_client: bool) -> None:
        relay = self.scp
        source_is_client = relay.upload
        try:
            moves = relay.from_source(data) if from_client == source_is_client else relay.from_sink(data)
        except ScpError as e:
            self._protocol_error(f"wiregate: scp protocol error: {e}")
            return
        to_client, to_target = ((moves.to_source, moves.to_sink) if source_is_client
                                else (moves.to_sink, moves.to_source))
        if to_target:
            self.up.write(bytes(to_target))
        if to_client:
            self._to_client(bytes(to_client), None)
        if not source_is_client:
            # the caller's scp is the sink: it would not learn why a file did not come
            for notice in moves.notices:
                self._tell(f"{notice}\n".encode(), stderr=True)

    def _scp_decide(self, op: str, path: str) -> Decision:
        decision = self._decide_file(op, path, None)
        if not decision.allowed:
            self._record_command("file", f"{op} {path}", decision)
        return decision

    def _scp_done(self, op: str, done: ScpDone) -> None:
        self._record_file(f"{op} {normalize_path(done.path)}", done.bytes, None if done.ok else "failed")

    # ---- target -> client -----------------------------------------------------------------

    def from_target(self, data: bytes, datatype: int | None) -> None:
        if self.closed:
            return
        if self.sftp is not None:
            self._sftp_from_target(data)
            return
        if self.scp is not None and not datatype:
            self._scp(data, from_client=False)
            return
        if self.tracker is not None:
            self.tracker.output(data)
            self._output_at = time.monotonic()
        if self.scans and self.transfer is None:
            stream = datatype or 0
            masker = self.maskers.get(stream)
            if masker is None:
                masker = self.maskers[stream] = StreamMasker(self.scans)
            data = masker.feed(data)
            if masker.pending and stream not in self._flush_timers:
                loop = asyncio.get_running_loop()
                self._flush_timers[stream] = loop.call_later(MASK_QUIET_S, self._flush_masker, stream, datatype)
        if data:
            self._to_client(data, datatype)

    def _flush_masker(self, stream: int, datatype: int | None) -> None:
        self._flush_timers.pop(stream, None)
        masker = self.maskers.get(stream)
        if masker is not None and masker.pending and not self.closed:
            data = masker.flush()
            if data:
                self._to_client(data, datatype)

    def _flush_all(self) -> None:
        for stream, masker in list(self.maskers.items()):
            timer = self._flush_timers.pop(stream, None)
            if timer is not None:
                timer.cancel()
            if masker.pending:
                data = masker.flush()
                if data:
                    self._to_client(data, EXTENDED_DATA_STDERR if stream else None)

    def _to_client(self, data: bytes, datatype: int | None) -> None:
        self.bytes_out += len(data)
        self.chan.write(data, datatype)
        if self.record_output:
            self._record(rec.TermOutput(time=time.time(), data=data))

    def _sftp_from_target(self, data: bytes) -> None:
        insp = self.sftp
        try:
            for pkt in insp.server_framer.feed(data):
                for done in insp.server_packet(pkt):
                    self._record_transfer(done)
                self.bytes_out += len(pkt)
                self.chan.write(pkt)
        except SftpError as e:
            self._protocol_error(f"wiregate: SFTP protocol error from the target: {e}")

    def target_eof(self) -> None:
        if self.closed:
            return
        self._flush_all()
        self.chan.write_eof()

    def target_closed(self) -> None:
        if self.closed:
            return
        self._flush_all()
        if self.exit_signal is not None:
            signal, core, msg, lang = self.exit_signal
            self._record_result(f"signal {signal}")
            self.end_reason = f"killed by signal {signal}"
            self.chan.exit_with_signal(signal, core, msg, lang)
        elif self.exit_status is not None:
            self._finish_exit(self.exit_status)
        else:
            self.end_reason = "the target closed the channel"
            self.chan.close()

    # ---- helpers --------------------------------------------------------------------------

    def _tell(self, data: bytes, stderr: bool = False) -> None:
        """Show the caller a message of the gateway's own (and record it with the output)."""
        self._to_client(data, EXTENDED_DATA_STDERR if stderr and self.term is None else None)

    def _fail(self, message: str, cause: BaseException | None = None) -> None:
        # the caller sees `message`; the operator's log also gets the cause (file names and such)
        log.warning("ssh session %s: %s%s", self.session_id, message, f" ({cause})" if cause is not None else "")
        self._tell(f"{message}\r\n".encode() if self.term is not None else f"{message}\n".encode(), stderr=True)
        self._finish_exit(GATEWAY_EXIT, reason=message.removeprefix("wiregate: "))

    def _protocol_error(self, message: str) -> None:
        log.warning("ssh session %s: %s", self.session_id, message)
        self.end_reason = message.removeprefix("wiregate: ")
        if self.up is not None:
            self.up.close()
        self.chan.close()

    def _finish_exit(self, status: int, *, reason: str | None = None) -> None:
        self._record_result(f"exit {status}")
        self.end_reason = reason or f"exit {status}"
        self.chan.exit(status)

    def _open_recording(self) -> None:
        owner = self.owner
        recorder = owner.listener.recorder
        if recorder is None:
            return
        self.recording = recorder.open(rec.SessionStart(
            session_id=self.session_id, time=self.started, identity=owner.identity.name,
            groups=tuple(owner.identity.groups), target=owner.target.name, protocol="ssh",
            client=owner.client_addr, tls=True, instance=recorder.instance, auth=owner.identity.method))

    def _record(self, event: Any) -> None:
        if self.recording is not None:
            self.recording.record(event)

    def _record_command(self, kind: str, text: str, decision: Decision) -> bool:
        """False: a recording is on and the event could not be queued."""
        self.commands += 1
        if self.recording is None:
            return True
        return self.recording.record(rec.Command(
            time=time.time(), kind=kind, text=recorded_text(text, self.scans), decision=decision.action,
            rule=decision.rule, message=decision.message))

    def _record_result(self, tag: str) -> None:
        self._record(rec.Result(time=time.time(), tag=tag, rows=0, bytes=self.bytes_out,
                                duration_ms=(time.time() - self.started) * 1000))

    def _record_transfer(self, done: Any) -> None:
        self._record_file(done.command, done.bytes_read + done.bytes_written,
                          None if done.ok else (done.status_message or "failed"))

    def _record_file(self, command: str, nbytes: int, error: str | None) -> None:
        """One file operation that went through: its text, and its bytes in a result."""
        self.commands += 1
        text = recorded_text(command, self.scans)
        now = time.time()
        self._record(rec.Command(time=now, kind="file", text=text, decision="allow", rule=None))
        self._record(rec.Result(time=now, tag=text, rows=0, bytes=nbytes, duration_ms=0.0, error=error))

    def _end(self) -> None:
        if self.recording is not None:
            self.recording.end(rec.SessionEnd(time=time.time(), reason=self.end_reason, commands=self.commands,
                                              bytes_in=self.bytes_in, bytes_out=self.bytes_out))
            self.recording = None


class UpstreamSide(asyncssh.SSHClientSession):
    """The target's half: forwards what the target sends to the client's half."""

    def __init__(self, peer: SessionChannel):
        self.peer = peer

    def data_received(self, data: bytes, datatype: int | None) -> None:
        try:
            self.peer.from_target(data, datatype)
        except Exception as exc:  # see SessionChannel.internal_error
            self.peer.internal_error(exc)

    def eof_received(self) -> bool:
        self.peer.target_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.peer.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.peer.exit_signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        if self.peer.chan is not None:
            self.peer.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.chan is not None and not self.peer._waiting:
            self.peer.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.target_closed()
