"""SSH benchmark: Debian's sshd reached directly vs through wiregate, in one run.

    python -m benchmarks.ssh [--short]   # alone: prints the markdown section, writes no files
    python -m benchmarks.run [--short]   # part of the whole benchmark (benchmarks/results/)

Everything runs on loopback: a throwaway sshd (``gateway/sshserver.py``, root
logs in with its generated key) and two ``wiregate serve`` processes in front of
it, each with ``listen.ssh`` and one ssh target:

* ``gateway``: one deny command rule, so every exec line goes through the
  policy check, and recording on (the default);
* ``gateway-masked``: the same plus a mask rule with the ``email`` and
  ``aws_key`` detectors on all output. The gateway refuses downloads where
  detector masks apply (it cannot mask a file it streams), so this one is
  measured on exec, the PTY and uploads only.

Measurements, interleaved (direct, gateway, gateway-masked, direct, ...) so that
the noise of a small machine hits all systems alike; medians are reported,
nothing is asserted about timings:

* exec round trip on one open asyncssh connection: ``conn.run("true")`` (a new
  session channel, exec, exit status, close): median and p95;
* exec with output: ``conn.run(OUTPUT_COMMAND)``, the gateway's output path
  (and, for the masked gateway, the detectors' scan of every line);
* PTY keystroke echo: one character typed into an interactive bash and its echo,
  with Debian's prompt (``root@host:~#``) and with a prompt without ``@``;
* ``ssh HOST true`` with OpenSSH, a new connection each time (handshake, auth,
  exec), with OpenSSH's default key exchange and with ``curve25519-sha256``;
* ``scp`` (SFTP mode, the default) and ``scp -O`` (legacy) of a random file, up
  and down: MB/s of the whole command, connection included.

Key exchange: OpenSSH 9 prefers ``sntrup761x25519-sha512``, which asyncssh (the
gateway) does not offer without liboqs; its cost (about 90 ms per connection on
a 2-core VM, client and server together) is paid only by direct connections.
``ssh HOST true`` is measured both ways; scp pins ``curve25519-sha256`` for every
system, so its figures compare the data paths.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from benchmarks.report import fmt, percentile, ratio, run_standalone, signals_held, why
from gateway.demo import render_config, start_gateway, stop_process, wait_listening
from gateway.errors import WiregateError
from gateway.pgserver import free_port
from gateway.sshserver import SshdError, ThrowawaySshd

__all__ = ["FULL", "SHORT", "SSH_SYSTEMS", "Profile", "SshReport", "render_ssh_markdown", "run_ssh_benchmark"]

SSH_SYSTEMS = ("direct", "gateway", "gateway-masked")
GATEWAYS = ("gateway", "gateway-masked")
HOST = "127.0.0.1"
TARGET = "bench"
GROUP = "bench"
CALLER = "bencher"
DENY_RULES = [{"name": "no-rm", "match": {"command": ["rm -rf *", "re:^shutdown\\b"]}, "action": "deny"}]
MASK_RULES = [{"name": "mask-secrets", "action": "mask", "detectors": ["email", "aws_key"]}]
GATEWAY_RULES = {"gateway": DENY_RULES, "gateway-masked": DENY_RULES + MASK_RULES}
# digits only: nothing for the detectors to mask, so the masked figures are the cost of the scan
OUTPUT_LINES = 100_000
OUTPUT_COMMAND = f"seq 1 {OUTPUT_LINES}"
OUTPUT_BYTES = sum(len(str(i)) + 1 for i in range(1, OUTPUT_LINES + 1))
OP_TIMEOUT = 60.0
SCP_TIMEOUT = 600.0
SECRET_EMAIL = "bench.secret@example.com"
# the key exchange both sides of every path can agree on (see the module docstring)
PINNED_KEX = "curve25519-sha256"
# a prompt the e-mail detector cannot start a match in (Debian's root@host:~# can)
PLAIN_PROMPT = b"PS1='$ '"
# errors a measurement may end with: the system is then dropped from the run, with the reason
EXPECTED = (WiregateError, SshdError, OSError, asyncssh.Error, TimeoutError, subprocess.SubprocessError,
            asyncio.IncompleteReadError)


@dataclass(frozen=True, slots=True)
class Profile:
    """How much of each measurement one run takes."""

    exec_runs: int
    output_runs: int
    pty_keys: int
    ssh_runs: int
    scp_bytes: int
    scp_rounds: int


FULL = Profile(exec_runs=200, output_runs=30, pty_keys=200, ssh_runs=20, scp_bytes=64 << 20, scp_rounds=3)
SHORT = Profile(exec_runs=30, output_runs=10, pty_keys=30, ssh_runs=5, scp_bytes=16 << 20, scp_rounds=1)

# key, title, unit of the samples; latencies are in ms, throughputs in MB/s (1e6 bytes)
SCENARIOS: tuple[tuple[str, str, str], ...] = (
    ("exec_true", "exec `true` on an open connection (asyncssh)", "ms"),
    ("exec_output", f"exec `{OUTPUT_COMMAND}` ({OUTPUT_BYTES:,} bytes out), open connection", "ms"),
    ("pty_echo", "PTY keystroke echo, bash, prompt `root@host:~#` (asyncssh)", "ms"),
    ("pty_echo_plain", "PTY keystroke echo, bash, prompt `$` (asyncssh)", "ms"),
    ("ssh_true", "`ssh HOST true`, new connection each, default key exchange", "ms"),
    ("ssh_true_c25519", f"`ssh HOST true`, new connection each, `KexAlgorithms={PINNED_KEX}`", "ms"),
    ("scp_sftp_up", "scp upload (SFTP mode)", "MB/s"),
    ("scp_sftp_down", "scp download (SFTP mode)", "MB/s"),
    ("scp_legacy_up", "scp -O upload (legacy)", "MB/s"),
    ("scp_legacy_down", "scp -O download (legacy)", "MB/s"),
)
# downloads the masked gateway refuses by design: never attempted
REFUSED_BY_DESIGN = {("gateway-masked", "scp_sftp_down"), ("gateway-masked", "scp_legacy_down")}


@dataclass(frozen=True, slots=True)
class SshEndpoint:
    """How a client reaches one system: port, login name, key, pinned host key."""

    name: str
    port: int
    user: str  # root on sshd; the target name through the gateway
    key_file: Path
    known_hosts: Path

    @property
    def destination(self) -> str:
        return f"{self.user}@{HOST}"

    def openssh_options(self, kex: str | None = None) -> list[str]:
        """Options for ssh and scp alike (scp's port flag differs from ssh's, so Port= instead)."""
        return ["-F", "/dev/null", "-o", f"Port={self.port}", "-o", f"IdentityFile={self.key_file}",
                "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                *(["-o", f"KexAlgorithms={kex}"] if kex else [])]

    async def connect(self) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(HOST, self.port, username=self.user, client_keys=[str(self.key_file)],
                                      known_hosts=str(self.known_hosts), config=None, agent_path=None)


@dataclass(slots=True)
class SshReport:
    """What one SSH run measured: samples per scenario and system, their summary, and what failed."""

    meta: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {k: {s: [] for s in SSH_SYSTEMS} for k, _t, _u in SCENARIOS})
    summary: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "summary": self.summary, "samples": self.samples, "errors": self.errors}



# --------------------------------------------------------------------------- the systems


def _write_caller_key(path: Path) -> str:
    """An ed25519 key for the gateway's one identity; returns its public key line."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=CALLER)
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    return key.export_public_key().decode().strip()


def start_ssh_gateway(workdir: Path, sshd: ThrowawaySshd, rules: list[dict],
                      caller_key: Path, caller_pub: str) -> tuple[subprocess.Popen, SshEndpoint]:
    """``wiregate serve`` with listen.ssh and one ssh target in front of ``sshd``; pins its host key."""
    workdir.mkdir()
    port = free_port()
    state = workdir / "state"
    config_path = workdir / "wiregate.toml"
    config_path.write_text(render_config(
        {"gateway": {"state_dir": str(state)}, "listen": {"ssh": f"{HOST}:{port}"},
         "policy": {"default": "allow"}},
        {"targets": [{"name": TARGET, "protocol": "ssh", "address": f"{HOST}:{sshd.port}", "user": "root",
                      "key_file": str(sshd.client_key), "known_hosts": str(sshd.known_hosts),
                      "allow_groups": [GROUP]}],
         "rules": rules,
         "identity.users": [{"name": CALLER, "groups": [GROUP], "ssh_keys": [caller_pub]}]},
        header="generated by `python -m benchmarks.ssh`",
    ))
    log_path = workdir / "gateway.log"
    proc = start_gateway(config_path, log_path)
    try:
        wait_listening(proc, HOST, port, log_path, timeout=20)
        host_pub = state / "keys" / "ssh_host_ed25519.pub"
        try:
            kind, blob = host_pub.read_text().split()[:2]
        except (OSError, ValueError) as e:
            raise WiregateError(f"cannot read the gateway's host key {host_pub}: {e}") from None
    except WiregateError:
        stop_process(proc)
        raise
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[{HOST}]:{port} {kind} {blob}\n")
    return proc, SshEndpoint(workdir.name, port, TARGET, caller_key, known_hosts)


def _ssh(ep: SshEndpoint, command: str, kex: str | None = None, verbose: bool = False,
         timeout: float = OP_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ssh", *ep.openssh_options(kex), *(["-v"] if verbose else []), ep.destination, command],
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)


def negotiated_kex(ep: SshEndpoint) -> str:
    """The key exchange OpenSSH's client agrees on with ``ep`` by default (from ``ssh -v``)."""
    p = _ssh(ep, "true", verbose=True)
    for line in p.stderr.decode(errors="replace").splitlines():
        if "kex: algorithm:" in line:
            return line.rsplit(":", 1)[1].strip()
    return "unknown"


def check_policy_is_on(ep: SshEndpoint) -> None:
    """A denied command must exit 126 with the gateway's one line, or the comparison would be unfair."""
    p = _ssh(ep, "rm -rf /nonexistent/wiregate-bench")
    if p.returncode != 126 or not p.stderr.startswith(b"wiregate: blocked by rule"):
        raise WiregateError(f"the gateway did not block `rm -rf` (exit {p.returncode}: "
                            f"{p.stderr.decode(errors='replace').strip()[:200]!r}); the policy check is not active")


def check_masking_is_on(ep: SshEndpoint) -> None:
    """The masked gateway must mask an e-mail address in exec output, or its figures would mean nothing."""
    p = _ssh(ep, f"echo mail={SECRET_EMAIL}")
    if p.returncode != 0 or SECRET_EMAIL.encode() in p.stdout or b"mail=" not in p.stdout:
        raise WiregateError(f"the masked gateway did not mask exec output (exit {p.returncode}: "
                            f"{(p.stdout + p.stderr).decode(errors='replace').strip()[:200]!r})")


def recorded_sessions(state_dir: Path) -> dict[str, int]:
    """Session files, commands and bytes in a gateway's recordings."""
    from recorder.events import Command
    from recorder.format import read_recording

    files = sorted((state_dir / "recordings").rglob("*.wgrec")) if state_dir.exists() else []
    commands = sum(sum(isinstance(e, Command) for _, e in read_recording(f).events) for f in files)
    return {"files": len(files), "commands": commands, "bytes": sum(f.stat().st_size for f in files)}


# --------------------------------------------------------------------------- measurements on open connections


async def _exec(conn: asyncssh.SSHClientConnection, command: str, expect_bytes: int | None) -> float:
    t0 = time.perf_counter()
    result = await conn.run(command, check=False, encoding=None)
    elapsed = time.perf_counter() - t0
    if result.exit_status != 0:
        raise WiregateError(f"exec {command!r} exited {result.exit_status}: {result.stderr!r}"[:300])
    if expect_bytes is not None and len(result.stdout) != expect_bytes:
        raise WiregateError(f"exec {command!r}: {len(result.stdout)} bytes of output, expected {expect_bytes}")
    return elapsed * 1e3


class _Pty:
    """An interactive bash on a PTY; ``keystroke()`` times one typed character until its echo."""

    def __init__(self, proc: asyncssh.SSHClientProcess) -> None:
        self.proc = proc

    @classmethod
    async def open(cls, conn: asyncssh.SSHClientConnection) -> _Pty:
        proc = await conn.create_process(term_type="xterm", term_size=(200, 50), encoding=None)
        pty = cls(proc)
        # $((1+1)): the marker is in the output, not in the echo of the typed line
        proc.stdin.write(b"echo READY$((1+1))\r")
        await pty._read_until(b"READY2")
        await asyncio.sleep(0.2)  # let the prompt arrive before the first timed keystroke
        await pty._drain()
        return pty

    async def _read_until(self, marker: bytes) -> bytes:
        out = b""
        while marker not in out:
            chunk = await self.proc.stdout.read(65536)
            if not chunk:
                raise WiregateError(f"the PTY session ended before {marker!r} arrived: {out[-200:]!r}")
            out += chunk
        return out

    async def _drain(self) -> None:
        try:
            while await asyncio.wait_for(self.proc.stdout.read(65536), 0.05):
                pass
        except TimeoutError:
            pass

    async def keystroke(self) -> float:
        t0 = time.perf_counter()
        self.proc.stdin.write(b"a")
        await self._read_until(b"a")
        elapsed = time.perf_counter() - t0
        # erase it again (readline echoes a backspace), so the line never grows
        self.proc.stdin.write(b"\x7f")
        await self._read_until(b"\x08")
        return elapsed * 1e3

    async def plain_prompt(self) -> None:
        """Switch to a prompt without ``@`` (the marker again comes from the output, not the echo)."""
        self.proc.stdin.write(PLAIN_PROMPT + b"; echo PROMPT$((2+1))\r")
        await self._read_until(b"PROMPT3")
        await asyncio.sleep(0.2)
        await self._drain()

    async def close(self) -> None:
        self.proc.stdin.write(b"\x15exit\r")
        try:
            await asyncio.wait_for(self.proc.wait_closed(), 10)
        except (TimeoutError, asyncssh.Error, OSError):
            self.proc.close()


async def _zero(step: Awaitable[None]) -> float:
    await step
    return 0.0


async def _interleaved(runs: int, ops: dict[str, Callable[[], Awaitable[float]]],
                       bucket: dict[str, list[float]] | None, errors: dict[str, str], label: str) -> None:
    """``runs`` rounds of one op per system in turn; a failing system gets its reason and drops out."""
    for _ in range(runs):
        for name, op in ops.items():
            if name in errors:
                continue
            try:
                value = await asyncio.wait_for(op(), OP_TIMEOUT)
            except EXPECTED as e:
                errors[name] = f"{label}: {why(e)}"
                continue
            if bucket is not None:
                bucket[name].append(value)


async def measure_open_connections(endpoints: dict[str, SshEndpoint], prof: Profile, report: SshReport,
                                   say: Callable[[str], None]) -> None:
    """exec and PTY scenarios, one asyncssh connection per system for all of them."""
    errors = report.errors
    conns: dict[str, asyncssh.SSHClientConnection] = {}
    ptys: dict[str, _Pty] = {}
    try:
        for name, ep in endpoints.items():
            try:
                conns[name] = await asyncio.wait_for(ep.connect(), OP_TIMEOUT)
                report.meta.setdefault("asyncssh_cipher", {})[name] = conns[name].get_extra_info("send_cipher")
            except EXPECTED as e:
                errors[name] = f"asyncssh connect: {why(e)}"

        def execs(command: str, expect: int | None) -> dict[str, Callable[[], Awaitable[float]]]:
            return {n: (lambda c=c: _exec(c, command, expect)) for n, c in conns.items()}

        say("ssh: warm-up")
        await _interleaved(5, execs("true", None), None, errors, "exec warm-up")
        say(f"ssh: exec `true` x {prof.exec_runs}")
        await _interleaved(prof.exec_runs, execs("true", None), report.samples["exec_true"], errors, "exec true")
        say(f"ssh: exec `{OUTPUT_COMMAND}` x {prof.output_runs}")
        await _interleaved(prof.output_runs, execs(OUTPUT_COMMAND, OUTPUT_BYTES), report.samples["exec_output"],
                           errors, "exec output")
        say(f"ssh: PTY keystroke echo x {prof.pty_keys}")
        for name, conn in conns.items():
            if name in errors:
                continue
            try:
                ptys[name] = await asyncio.wait_for(_Pty.open(conn), OP_TIMEOUT)
            except EXPECTED as e:
                errors[name] = f"PTY shell: {why(e)}"
        await _interleaved(3, {n: p.keystroke for n, p in ptys.items()}, None, errors, "PTY warm-up")
        await _interleaved(prof.pty_keys, {n: p.keystroke for n, p in ptys.items()}, report.samples["pty_echo"],
                           errors, "PTY echo")
        await _interleaved(1, {n: (lambda p=p: _zero(p.plain_prompt())) for n, p in ptys.items()}, None, errors,
                           "PTY prompt")
        await _interleaved(prof.pty_keys, {n: p.keystroke for n, p in ptys.items()},
                           report.samples["pty_echo_plain"], errors, "PTY echo, plain prompt")
    finally:
        for pty in ptys.values():
            await pty.close()
        for conn in conns.values():
            conn.close()
            try:
                await asyncio.wait_for(conn.wait_closed(), 10)
            except (TimeoutError, asyncssh.Error, OSError):
                pass


# --------------------------------------------------------------------------- measurements with OpenSSH


def ssh_true(ep: SshEndpoint, kex: str | None = None) -> float:
    t0 = time.perf_counter()
    p = _ssh(ep, "true", kex)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise WiregateError(f"ssh {ep.destination} true: exit {p.returncode}: "
                            f"{p.stderr.decode(errors='replace').strip()[:300]}")
    return elapsed * 1e3


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class ScpFiles:
    """The random file on the client side, its copy on the server side, and where transfers land."""

    source: Path  # uploaded
    remote_source: Path  # downloaded (sshd runs on this machine: a path of the same file system)
    remote_dir: Path
    local_dir: Path
    size: int
    digest: str


def scp(ep: SshEndpoint, files: ScpFiles, *, legacy: bool, upload: bool) -> float:
    """One scp command, timed; the copy is checked (size and SHA-256) and removed afterwards. MB/s."""
    if upload:
        dest = files.remote_dir / f"up-{ep.name}.bin"
        src_arg, dst_arg = str(files.source), f"{ep.destination}:{dest}"
    else:
        dest = files.local_dir / f"down-{ep.name}.bin"
        src_arg, dst_arg = f"{ep.destination}:{files.remote_source}", str(dest)
    cmd = ["scp", *(["-O"] if legacy else []), "-q", *ep.openssh_options(PINNED_KEX), src_arg, dst_arg]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=SCP_TIMEOUT)
    elapsed = time.perf_counter() - t0
    try:
        if p.returncode != 0:
            raise WiregateError(f"scp{' -O' if legacy else ''} {'upload' if upload else 'download'} exit "
                                f"{p.returncode}: {p.stderr.decode(errors='replace').strip()[:300]}")
        if not dest.exists() or dest.stat().st_size != files.size or _sha256(dest) != files.digest:
            raise WiregateError(f"scp {'upload' if upload else 'download'}: the copy differs from the source")
    finally:
        dest.unlink(missing_ok=True)
    return files.size / elapsed / 1e6


def _prepare_files(workdir: Path, sshd: ThrowawaySshd, size: int) -> ScpFiles:
    local_dir = workdir / "client"
    local_dir.mkdir()
    assert sshd.root_dir is not None
    remote_dir = sshd.root_dir / "files"
    remote_dir.mkdir()
    source = local_dir / "random.bin"
    with open(source, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
        f.write(os.urandom(size & ((1 << 20) - 1)))
    remote_source = remote_dir / "random.bin"
    shutil.copyfile(source, remote_source)
    return ScpFiles(source, remote_source, remote_dir, local_dir, size, _sha256(source))


# --------------------------------------------------------------------------- summary and report




def summarize(report: SshReport) -> dict[str, Any]:
    """Per scenario and metric: each system's value and the ratios gateway/direct, masked/gateway."""
    out: dict[str, Any] = {}
    for key, _title, unit in SCENARIOS:
        metrics: dict[str, Callable[[list[float]], float | None]] = {
            "median": lambda v: statistics.median(v) if v else None}
        if key in ("exec_true", "pty_echo", "pty_echo_plain"):
            metrics["p95"] = lambda v: percentile(v, 95)
        out[key] = {}
        for metric, fn in metrics.items():
            row: dict[str, float | None] = {s: fn(report.samples[key][s]) for s in SSH_SYSTEMS}
            row["gateway/direct"] = ratio(row["gateway"], row["direct"])
            row["masked/gateway"] = ratio(row["gateway-masked"], row["gateway"])
            out[key][metric] = row
        out[key]["n"] = {s: len(report.samples[key][s]) for s in SSH_SYSTEMS}
    med = {k: out[k]["median"] for k in ("exec_true", "exec_output", "ssh_true_c25519")}
    out["added_ms"] = {k: {g: (row[g] - row["direct"]) if row[g] is not None and row["direct"] is not None
                           else None for g in GATEWAYS} for k, row in med.items()}
    return out


def _cell(v: float | None) -> str:
    return fmt(v, decimals=2)


def render_ssh_markdown(report: SshReport) -> list[str]:
    """The SSH section of the benchmark's markdown report, as lines."""
    meta, summary = report.meta, report.summary
    prof = meta.get("profile") or {}
    mib = prof.get("scp_bytes", 0) >> 20
    lines = [
        "## SSH",
        "",
        f"Mode **{meta.get('mode', '?')}**, interleaved runs (direct, gateway, gw masked, ...), medians: "
        f"exec `true` x {prof.get('exec_runs')}, exec with output x {prof.get('output_runs')}, "
        f"PTY keystrokes x {prof.get('pty_keys')}, `ssh HOST true` x {prof.get('ssh_runs')}, "
        f"scp of a {mib} MiB random file x {prof.get('scp_rounds')} per mode and direction.",
        "",
        f"- {meta.get('openssh', 'OpenSSH ?')} (client, and Debian's sshd as the target); "
        f"asyncssh {meta.get('asyncssh', '?')} as the client of the open-connection scenarios",
        "- **direct**: the sshd itself, root with its key; **gateway**: `wiregate serve` with `listen.ssh`, one ssh "
        "target (that sshd), 1 deny command rule (`rm -rf *`, `re:^shutdown\\b`), recording every session; "
        "**gw masked**: the same plus a mask rule with the `email` and `aws_key` detectors on all output "
        f"(`{OUTPUT_COMMAND}` prints digits only: nothing is masked, the figure is the scan)",
        "- scp MB/s = file size / time of the whole `scp` command (connection included); the copy is checked "
        "by SHA-256 after each transfer",
    ]
    kex = meta.get("openssh_kex") or {}
    if kex:
        lines.append("- key exchange OpenSSH's client agrees on by default: "
                     + ", ".join(f"{k} `{v}`" for k, v in kex.items())
                     + f"; scp pins `{PINNED_KEX}` for all systems")
    ciphers = meta.get("asyncssh_cipher") or {}
    if ciphers:
        lines.append("- cipher negotiated by asyncssh: " + ", ".join(f"{k} `{v}`" for k, v in ciphers.items()))
    lines += [
        "",
        "| scenario | metric | direct | gateway | gw masked | gateway/direct | masked/gateway |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    if report.errors:
        status = ["not measured¹" if s in report.errors else "ok" for s in SSH_SYSTEMS]
        lines.append("| status | | " + " | ".join(status) + " | | |")
    for key, title, unit in SCENARIOS:
        if key.startswith("scp_"):
            title = f"{title}, {mib} MiB"
        for metric, row in summary.get(key, {}).items():
            if metric == "n":
                continue
            cells = []
            for s in SSH_SYSTEMS:
                if (s, key) in REFUSED_BY_DESIGN and s not in report.errors:
                    cells.append("refused²")
                else:
                    cells.append(_cell(row[s]))
            label = f"{metric} {unit}" if unit == "ms" else unit
            lines.append(f"| {title} | {label} | " + " | ".join(cells) + " | "
                         f"{fmt(row['gateway/direct'], True)} | {fmt(row['masked/gateway'], True)} |")
    added = summary.get("added_ms") or {}
    if added:
        lines += [
            "",
            "Added ms per operation (median gateway − median direct): exec `true` **"
            f"{_cell(added['exec_true']['gateway'])}** (masked {_cell(added['exec_true']['gateway-masked'])}), "
            f"exec with output {_cell(added['exec_output']['gateway'])} "
            f"(masked {_cell(added['exec_output']['gateway-masked'])}), `ssh HOST true` with {PINNED_KEX} **"
            f"{_cell(added['ssh_true_c25519']['gateway'])}** "
            f"(masked {_cell(added['ssh_true_c25519']['gateway-masked'])}).",
        ]
    rec = summary.get("recording") or {}
    if rec.get("files"):
        lines += [
            "",
            f"Recording (gateway instance): {rec['files']:,} session files, {rec['commands']:,} commands, "
            f"{rec['bytes']:,} bytes.",
        ]
    lines += ["", "² the gateway refuses downloads where detector masks apply (it cannot mask a file it "
              "streams): not attempted.", "",
              "PTY echo under masks: a typed character is released at once while its line holds no "
              "possible match still forming (Debian's prompt `root@host:~#` has an `@` but no address); "
              "a line that could be a secret in the making waits for the masker's quiet-time flush "
              "(about 10 ms)."]
    if report.errors:
        lines += ["", "¹ Not measured (SSH):", ""]
        for name, msg in report.errors.items():
            first, *rest = msg.splitlines() or [""]
            lines.append(f"- **{name}**: {first}")
            if rest:
                lines += ["", "  ```", *[f"  {line}" for line in rest[-20:]], "  ```"]
    return lines


def _openssh_version() -> str:
    try:
        p = subprocess.run(["ssh", "-V"], capture_output=True, text=True, timeout=10)
        return (p.stderr or p.stdout).strip().split(",")[0] or "OpenSSH (unknown version)"
    except (OSError, subprocess.SubprocessError):
        return "OpenSSH (not found)"


# --------------------------------------------------------------------------- the run


def run_ssh_benchmark(*, short: bool, say: Callable[[str], None], base_dir: Path | None = None) -> SshReport:
    """Start sshd and the two gateways, measure, stop them all; a system that fails gets its reason.

    Starting nothing at all (no sshd, no ssh client) is reported as an error of
    every system rather than raised, so the PostgreSQL figures of the same run are kept.
    """
    prof = SHORT if short else FULL
    report = SshReport()
    report.meta.update(mode="short" if short else "full", profile={
        "exec_runs": prof.exec_runs, "output_runs": prof.output_runs, "pty_keys": prof.pty_keys,
        "ssh_runs": prof.ssh_runs, "scp_bytes": prof.scp_bytes, "scp_rounds": prof.scp_rounds},
        openssh=_openssh_version(), asyncssh=asyncssh.__version__, output_command=OUTPUT_COMMAND,
        output_bytes=OUTPUT_BYTES)
    errors = report.errors
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wiregate-bench-ssh-", dir=base_dir))
    workdir.chmod(0o711)
    sshd: ThrowawaySshd | None = None
    gateways: list[subprocess.Popen] = []
    recording: dict[str, int] = {}
    try:
        if not shutil.which("ssh") or not shutil.which("scp"):
            raise WiregateError("ssh/scp not found; install Debian's openssh-client")
        say("ssh: starting sshd")
        # an empty HOME for the sessions: the machine's own dotfiles (a pyenv init in root's
        # .bashrc, which bash sources for every ssh command) would otherwise dominate every exec
        home = workdir / "home"
        home.mkdir()
        sshd = ThrowawaySshd(base_dir=workdir, log_level="ERROR", extra_config=[f"SetEnv HOME={home}"]).start()
        assert sshd.client_key is not None and sshd.known_hosts is not None
        endpoints = {"direct": SshEndpoint("direct", sshd.port, "root", sshd.client_key, sshd.known_hosts)}
        caller_key = workdir / "caller_ed25519"
        caller_pub = _write_caller_key(caller_key)
        for system in GATEWAYS:
            say(f"ssh: starting wiregate ({system})")
            try:
                proc, ep = start_ssh_gateway(workdir / system, sshd, GATEWAY_RULES[system], caller_key, caller_pub)
                gateways.append(proc)
                endpoints[system] = ep
                check_policy_is_on(ep)
                if system == "gateway-masked":
                    check_masking_is_on(ep)
            except EXPECTED as e:
                endpoints.pop(system, None)
                errors[system] = f"wiregate serve: {why(e)}"
                say(f"ssh: {system} not measured: {why(e)}")
        try:
            ssh_true(endpoints["direct"])
        except EXPECTED as e:
            errors["direct"] = f"ssh to sshd: {why(e)}"

        asyncio.run(measure_open_connections({n: ep for n, ep in endpoints.items() if n not in errors},
                                             prof, report, say))

        def measure(fn: Callable[[SshEndpoint], float], key: str | None, label: str) -> None:
            for name, ep in endpoints.items():
                if name in errors or (name, key) in REFUSED_BY_DESIGN:
                    continue
                try:
                    value = fn(ep)
                except EXPECTED as e:
                    errors[name] = f"{label}: {why(e)}"
                    say(f"ssh: {name}: {label}: {why(e)}")
                    continue
                if key is not None:
                    report.samples[key][name].append(value)

        say(f"ssh: `ssh HOST true` x {prof.ssh_runs}, default key exchange and {PINNED_KEX}")
        for name, ep in endpoints.items():
            if name not in errors:
                report.meta.setdefault("openssh_kex", {})[name] = negotiated_kex(ep)
        for _ in range(prof.ssh_runs):
            measure(ssh_true, "ssh_true", "ssh true")
            measure(lambda ep: ssh_true(ep, PINNED_KEX), "ssh_true_c25519", f"ssh true ({PINNED_KEX})")
        say(f"ssh: scp {prof.scp_bytes >> 20} MiB x {prof.scp_rounds}")
        files = _prepare_files(workdir, sshd, prof.scp_bytes)
        for r in range(prof.scp_rounds):
            for legacy in (False, True):
                for upload in (True, False):
                    key = f"scp_{'legacy' if legacy else 'sftp'}_{'up' if upload else 'down'}"
                    say(f"ssh: round {r + 1}/{prof.scp_rounds}: {key}")
                    measure(lambda ep: scp(ep, files, legacy=legacy, upload=upload), key, key)
    except EXPECTED as e:
        for system in SSH_SYSTEMS:
            errors.setdefault(system, why(e))
        say(f"ssh: not measured: {why(e)}")
    finally:
        with signals_held():
            for proc in gateways:
                stop_process(proc)
            if "gateway" not in errors:
                try:
                    recording = recorded_sessions(workdir / "gateway" / "state")
                except Exception as e:  # a broken recording must not lose the figures
                    errors["recording"] = f"cannot read the SSH gateway's recordings: {type(e).__name__}: {e}"
            if sshd is not None:
                sshd.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    report.summary = summarize(report)
    report.summary["recording"] = recording
    report.meta["duration_s"] = round(time.monotonic() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ssh", description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="CI sizes: fewer runs, a 16 MiB file")
    args = ap.parse_args(argv)
    return run_standalone(run_ssh_benchmark, render_ssh_markdown, short=args.short)


if __name__ == "__main__":
    sys.exit(main())
