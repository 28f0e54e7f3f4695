"""SSH through the gateway, end to end: OpenSSH's ssh, scp, sftp and rsync, and asyncssh, against
Debian's sshd on a loopback port (tests/e2e/sshd.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
from asyncssh.constants import PTY_ECHO
import pytest

from gateway.pgserver import free_port
from tests.e2e.ssh_gateway import SECRET_AWS, SECRET_EMAIL, SshGateway


@pytest.fixture(scope="module")
def protected(sshd) -> Path:
    path = sshd.root_dir / "protected"
    path.mkdir(exist_ok=True)
    (path / "keep.txt").write_text("keep me\n")
    return path


@pytest.fixture(scope="module")
def g(sshd, protected, tmp_path_factory):
    rules = [
        {"name": "no-rm", "match": {"command": ["rm -rf *", "re:^shutdown\\b"]}, "action": "deny"},
        {"name": "protected-files", "match": {"file": [f"write {protected}/*", f"remove {protected}/*"]},
         "action": "deny"},
        {"name": "no-secret-reads", "match": {"file": ["read */secret.txt"]}, "action": "deny"},
        {"name": "sshd-port", "match": {"forward": [f"local 127.0.0.1:{sshd.port}"]}, "action": "allow"},
        {"name": "relay-forwards", "targets": ["relay"], "match": {"forward": ["agent", "remote 127.0.0.1:*"]},
         "action": "allow"},
        {"name": "mask-secrets", "targets": ["masked"], "action": "mask", "detectors": ["email", "aws_key"]},
    ]
    gateway = SshGateway(tmp_path_factory.mktemp("sshgw"), sshd, rules=rules,
                         password_user=sshd.ensure_password_user()).start()
    yield gateway
    gateway.stop()


def run(coro):
    return asyncio.run(coro)


def wiregate(g: SshGateway, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "-c", str(g.gw.config_path)],
                          capture_output=True, text=True, timeout=60)


def recordings(g: SshGateway) -> list[dict]:
    res = wiregate(g, "sessions", "list", "--json")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def export(g: SshGateway, session_id: str) -> list[dict]:
    res = wiregate(g, "sessions", "export", session_id, "--format", "jsonl")
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def session_with(g: SshGateway, text: str) -> list[dict]:
    """The exported events of the (ended) session whose commands include ``text``."""
    def find():
        for row in recordings(g):
            events = export(g, row["id"])
            if any(e["kind"] == "command" and text in e["text"] for e in events) and \
                    any(e["kind"] == "session_end" for e in events):
                return events
        return None
    events = wait_for(find)
    assert events, f"no ended recording with a command holding {text!r}"
    return events


# ---- exec -----------------------------------------------------------------------------------

def test_exec_stdout_stderr_and_exit_status(g):
    res = g.ssh("web", "echo hi; echo err >&2; exit 3")
    assert res.stdout == b"hi\n"
    assert res.stderr == b"err\n"
    assert res.returncode == 3


def test_exec_megabytes_of_stdin_intact(g):
    data = os.urandom(8 * 1024 * 1024)
    res = g.ssh("web", "sha256sum", input=data)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_exec_megabytes_of_stdout_intact(g):
    res = g.ssh("web", "head -c 6000000 /dev/zero | tr '\\0' x")
    assert res.returncode == 0
    assert res.stdout == b"x" * 6000000


def test_denied_command_exits_126_with_one_line(g, protected):
    res = g.ssh("web", f"rm -rf {protected}")
    assert res.returncode == 126
    lines = res.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith('wiregate: blocked by rule "no-rm"')
    assert (protected / "keep.txt").exists()
    events = session_with(g, f"rm -rf {protected}")
    command = next(e for e in events if e["kind"] == "command")
    assert command["decision"] == "deny" and command["rule"] == "no-rm"


def test_denied_by_regex_and_inside_a_compound_line(g):
    assert g.ssh("web", "shutdown -h now").returncode == 126
    res = g.ssh("web", "echo ok; rm -rf /tmp/nothing-here")
    assert res.returncode == 126 and res.stdout == b""


def test_exit_signal_propagates(g):
    async def go():
        async with g.connect() as conn:
            result = await conn.run("kill -TERM $$", check=False)
            return result.exit_signal, result.returncode
    signal, code = run(go())
    assert signal is not None and signal[0] == "TERM"
    assert code == -15


def test_signal_from_the_client_reaches_the_command(g):
    # a target the gateway logs in to with a password, as an unprivileged user: sshd only passes
    # signals on in privilege-separated sessions (not root's)
    async def go():
        async with g.connect("as-user") as conn:
            proc = await conn.create_process("echo started; exec sleep 30", encoding=None)
            assert await proc.stdout.readline() == b"started\n"
            proc.send_signal("TERM")
            await asyncio.wait_for(proc.wait_closed(), 10)
            return proc.exit_signal
    signal = run(go())
    assert signal is not None and signal[0] == "TERM"


def test_pty_modes_and_terminal_type_forwarded(g):
    async def go():
        async with g.connect() as conn:
            result = await conn.run("echo $TERM; stty -a | tr ' ' '\\n' | grep -x -- '-echo' || echo no-echo-flag",
                                    term_type="vt220", term_size=(90, 20), term_modes={PTY_ECHO: 0},
                                    check=False)
            return result.stdout
    out = run(go())
    assert "vt220" in out
    assert "-echo" in out


# ---- authentication -------------------------------------------------------------------------

def test_token_as_password(g):
    token = g.gw.token("alice", ["sre"])

    async def go():
        async with g.connect("alice@web", client_keys=None, password=token,
                             preferred_auth="password") as conn:
            return (await conn.run("echo token-ok", check=True)).stdout
    assert run(go()) == "token-ok\n"


def test_token_by_keyboard_interactive(g):
    token = g.gw.token("alice", ["sre"])

    async def go():
        async with g.connect("alice@web", client_keys=None, password=token,
                             preferred_auth="keyboard-interactive") as conn:
            return (await conn.run("echo kbd-ok", check=True)).stdout
    assert run(go()) == "kbd-ok\n"


@pytest.mark.parametrize("username,groups,why", [
    ("alice@web", ["sre"], "bad token"),
    ("mallory@web", ["sre"], "name does not match"),
    ("alice@web", ["other"], "group not allowed"),
    ("alice@nosuch", ["sre"], "unknown target"),
])
def test_refused_logins(g, username, groups, why):
    token = "not-a-token" if why == "bad token" else g.gw.token("alice", groups)

    async def go():
        async with g.connect(username, client_keys=None, password=token, preferred_auth="password"):
            pass
    with pytest.raises(asyncssh.PermissionDenied):
        run(go())


def test_key_of_an_identity_not_allowed_on_the_target(g):
    res = g.ssh("web", "true", caller=g.bob)
    assert res.returncode == 255
    assert b"Permission denied" in res.stderr


# ---- PTY shells -----------------------------------------------------------------------------

async def _read_until(proc, marker: bytes, timeout: float = 10.0) -> bytes:
    out = b""
    async with asyncio.timeout(timeout):
        while marker not in out:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                break
            out += chunk
    return out


def test_pty_shell_size_resize_and_denied_line(g, protected):
    async def go():
        async with g.connect() as conn:
            proc = await conn.create_process(term_type="xterm", term_size=(80, 24), encoding=None)
            proc.stdin.write(b"stty size; echo READY$((0+1))\r")
            first = await _read_until(proc, b"READY1\r\n")
            proc.change_terminal_size(120, 40)
            proc.stdin.write(b"stty size; echo READY$((1+1))\r")
            second = await _read_until(proc, b"READY2\r\n")
            proc.stdin.write(f"rm -rf {protected}\r".encode())
            denied = await _read_until(proc, b"wiregate: blocked")
            proc.stdin.write(b"echo still-$((0))-here\r")
            after = await _read_until(proc, b"still-0-here\r\n")
            proc.stdin.write(b"exit 7\r")
            await proc.wait_closed()
            return first, second, denied, after, proc.exit_status
    first, second, denied, after, status = run(go())
    assert b"24 80" in first
    assert b"40 120" in second
    assert b'wiregate: blocked by rule "no-rm"' in denied
    assert b"still-0-here" in after
    assert status == 7
    assert (protected / "keep.txt").exists()


def test_pty_session_replay_and_asciicast(g, tmp_path):
    async def go():
        async with g.connect() as conn:
            proc = await conn.create_process(term_type="xterm", term_size=(100, 30), encoding=None)
            proc.stdin.write(b"echo replay-$((6*7))\r")
            await _read_until(proc, b"replay-42\r\n")
            proc.stdin.write(b"exit\r")
            await proc.wait_closed()
    run(go())
    events = session_with(g, "echo replay-$((6*7))")
    session_id = events[0]["session_id"]
    assert any(e["kind"] == "term_resize" and e["cols"] == 100 and e["rows"] == 30 for e in events)
    res = subprocess.run([sys.executable, "-m", "gateway", "replay", session_id, "--speed", "0",
                          "-c", str(g.gw.config_path)], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert b"replay-42" in res.stdout
    cast = tmp_path / "session.cast"
    res = wiregate(g, "sessions", "export", session_id, "--format", "asciicast")
    assert res.returncode == 0, res.stderr
    cast.write_text(res.stdout)
    header = json.loads(res.stdout.splitlines()[0])
    assert header["version"] == 2 and header["width"] == 100 and header["height"] == 30
    # `make test` installs asciinema; `script` (util-linux) gives it the terminal it wants
    assert shutil.which("asciinema"), "asciinema is missing: apt-get install asciinema"
    assert shutil.which("script"), "script is missing: apt-get install bsdutils"
    played = subprocess.run(["script", "-qec", f"asciinema cat {cast}", "/dev/null"], capture_output=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert played.returncode == 0, played.stderr
    assert b"replay-42" in played.stdout


# ---- masking --------------------------------------------------------------------------------

def test_exec_output_is_masked_and_never_recorded_raw(g):
    res = g.ssh("masked", f"printf 'mail={SECRET_EMAIL}\\naws={SECRET_AWS}\\nplain line\\n'")
    assert res.returncode == 0
    out = res.stdout.decode()
    assert SECRET_EMAIL not in out and SECRET_AWS not in out
    assert "plain line" in out and "mail=****" in out
    events = session_with(g, "printf 'mail=")
    raw = json.dumps(events)
    assert SECRET_EMAIL not in raw and SECRET_AWS not in raw
    state = g.gw.workdir / "state"
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET_EMAIL.encode() not in data and SECRET_AWS.encode() not in data, path


def test_pty_output_is_masked(g):
    async def go():
        async with g.connect("masked") as conn:
            proc = await conn.create_process(term_type="xterm", term_size=(80, 24), encoding=None)
            proc.stdin.write(b"printf 'x=%s\\n' carol.secret@exam''ple.com; echo DONE-$((1+1))\r")
            out = await _read_until(proc, b"DONE-2")
            proc.stdin.write(b"exit\r")
            await proc.wait_closed()
            return out
    out = run(go())
    assert SECRET_EMAIL.encode() not in out
    assert b"x=****" in out


def test_download_refused_under_detector_masks(g, sshd, tmp_path):
    (sshd.root_dir / "creds.env").write_text(f"AWS={SECRET_AWS}\n")
    res = subprocess.run(["scp", *g.options(), f"masked@127.0.0.1:{sshd.root_dir / 'creds.env'}",
                          str(tmp_path / "creds.env")], capture_output=True, timeout=60)
    assert res.returncode != 0
    assert not (tmp_path / "creds.env").exists() or SECRET_AWS not in (tmp_path / "creds.env").read_text()


# ---- file transfer --------------------------------------------------------------------------

def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["sftp", "legacy"])
def test_scp_round_trip(g, sshd, tmp_path, mode):
    src = tmp_path / "payload.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = sshd.root_dir / f"scp-{mode}.bin"
    flags = ["-O"] if mode == "legacy" else []
    up = subprocess.run(["scp", *flags, *g.options(), str(src), f"web@127.0.0.1:{remote}"],
                        capture_output=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert _sha(remote) == _sha(src)
    back = tmp_path / "back.bin"
    down = subprocess.run(["scp", *flags, *g.options(), f"web@127.0.0.1:{remote}", str(back)],
                          capture_output=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert _sha(back) == _sha(src)


def test_sftp_round_trip_and_operations_recorded(g, sshd, tmp_path):
    src = tmp_path / "up.bin"
    src.write_bytes(os.urandom(1024 * 1024 + 5))
    remote_dir = sshd.root_dir / "sftp-dir"
    batch = tmp_path / "batch"
    batch.write_text(f"mkdir {remote_dir}\nput {src} {remote_dir}/up.bin\nget {remote_dir}/up.bin {tmp_path}/down.bin\n"
                     f"rename {remote_dir}/up.bin {remote_dir}/moved.bin\nrm {remote_dir}/moved.bin\nrmdir {remote_dir}\n")
    res = subprocess.run(["sftp", *g.options(), "-b", str(batch), "web@127.0.0.1"], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert _sha(tmp_path / "down.bin") == _sha(src)
    assert not remote_dir.exists()
    events = session_with(g, f"mkdir {remote_dir}")
    texts = [e["text"] for e in events if e["kind"] == "command"]
    assert f"write {remote_dir}/up.bin" in texts
    assert f"read {remote_dir}/up.bin" in texts
    assert any(t.startswith(f"rename {remote_dir}/up.bin") for t in texts)
    assert f"remove {remote_dir}/moved.bin" in texts
    results = {e["tag"]: e["bytes"] for e in events if e["kind"] == "result"}
    assert results[f"write {remote_dir}/up.bin"] == src.stat().st_size
    assert results[f"read {remote_dir}/up.bin"] == src.stat().st_size


def test_sftp_write_under_a_protected_path_refused(g, protected, tmp_path):
    src = tmp_path / "evil.txt"
    src.write_text("overwritten\n")
    batch = tmp_path / "batch"
    batch.write_text(f"put {src} {protected}/keep.txt\n")
    res = subprocess.run(["sftp", *g.options(), "-b", str(batch), "web@127.0.0.1"], capture_output=True, timeout=60)
    assert res.returncode != 0
    assert (protected / "keep.txt").read_text() == "keep me\n"
    batch.write_text(f"rm {protected}/keep.txt\n")
    res = subprocess.run(["sftp", *g.options(), "-b", str(batch), "web@127.0.0.1"], capture_output=True, timeout=60)
    assert res.returncode != 0
    assert (protected / "keep.txt").exists()
    # reading is not refused
    batch.write_text(f"get {protected}/keep.txt {tmp_path}/kept.txt\n")
    res = subprocess.run(["sftp", *g.options(), "-b", str(batch), "web@127.0.0.1"], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "kept.txt").read_text() == "keep me\n"


def test_legacy_scp_into_protected_path_refused(g, protected, tmp_path):
    src = tmp_path / "x.txt"
    src.write_text("nope\n")
    res = subprocess.run(["scp", "-O", *g.options(), str(src), f"web@127.0.0.1:{protected}/x.txt"],
                         capture_output=True, timeout=60)
    assert res.returncode != 0
    assert not (protected / "x.txt").exists()


def test_legacy_scp_recursive_upload_checks_each_file(g, sshd, protected, tmp_path):
    tree = tmp_path / "protected"  # lands as ROOT/protected/...: the protected directory
    tree.mkdir()
    (tree / "evil.txt").write_text("evil\n")
    res = subprocess.run(["scp", "-O", "-r", *g.options(), str(tree), f"web@127.0.0.1:{sshd.root_dir}"],
                         capture_output=True, timeout=60)
    assert res.returncode != 0
    assert b'blocked by rule "protected-files"' in res.stderr
    assert not (protected / "evil.txt").exists()


def test_legacy_scp_recursive_download_checks_each_file(g, sshd, tmp_path):
    remote = sshd.root_dir / "mixed"
    remote.mkdir(exist_ok=True)
    (remote / "secret.txt").write_text("top secret\n")
    (remote / "other.txt").write_text("fine\n")
    res = subprocess.run(["scp", "-O", "-r", *g.options(), f"web@127.0.0.1:{remote}", str(tmp_path / "got")],
                         capture_output=True, timeout=60)
    assert b'blocked by rule "no-secret-reads"' in res.stderr
    assert (tmp_path / "got" / "other.txt").read_text() == "fine\n"
    assert not (tmp_path / "got" / "secret.txt").exists()


def test_legacy_scp_with_a_remote_glob_refused_where_files_are_guarded(g, sshd, tmp_path):
    remote = sshd.root_dir / "globbed"
    remote.mkdir(exist_ok=True)
    (remote / "secret.txt").write_text("top secret\n")
    res = subprocess.run(["scp", "-O", *g.options(), f"web@127.0.0.1:{remote}/*.txt", str(tmp_path)],
                         capture_output=True, timeout=60)
    assert res.returncode != 0
    assert b"cannot be checked file by file" in res.stderr
    assert not (tmp_path / "secret.txt").exists()


def test_sftp_read_write_open_refused_under_detector_masks(g, sshd):
    (sshd.root_dir / "rw.env").write_text(f"AWS={SECRET_AWS}\n")

    async def go():
        async with g.connect("masked") as conn:
            async with conn.start_sftp_client() as sftp:
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await sftp.open(str(sshd.root_dir / "rw.env"), "r+b")
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await sftp.open(str(sshd.root_dir / "rw.env"), "rb")
                async with await sftp.open(str(sshd.root_dir / "new.txt"), "wb") as f:
                    await f.write(b"uploads are fine\n")
    run(go())
    assert (sshd.root_dir / "new.txt").read_text() == "uploads are fine\n"


def test_rsync_round_trip(g, sshd, tmp_path):
    if not shutil.which("rsync"):
        pytest.fail("rsync is not installed (apt-get install rsync)")
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(500_000))
    (src / "sub" / "b.txt").write_text("hello rsync\n")
    remote = sshd.root_dir / "rsync-dst"
    rsh = " ".join(["ssh", *g.options()])
    up = subprocess.run(["rsync", "-a", "-e", rsh, f"{src}/", f"web@127.0.0.1:{remote}/"],
                        capture_output=True, timeout=60)
    assert up.returncode == 0, up.stderr
    assert _sha(remote / "a.bin") == _sha(src / "a.bin")
    back = tmp_path / "back"
    down = subprocess.run(["rsync", "-a", "-e", rsh, f"web@127.0.0.1:{remote}/", f"{back}/"],
                          capture_output=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert (back / "sub" / "b.txt").read_text() == "hello rsync\n"
    assert _sha(back / "a.bin") == _sha(src / "a.bin")


# ---- forwarding -----------------------------------------------------------------------------

def test_local_forward_refused_unless_a_rule_allows_it(g, sshd):
    async def go():
        async with g.connect() as conn:
            with pytest.raises(asyncssh.ChannelOpenError) as refused:
                await conn.open_connection("127.0.0.1", 9)
            reader, writer = await conn.open_connection("127.0.0.1", sshd.port)
            banner = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            return refused.value.reason, banner
    reason, banner = run(go())
    assert "forwarding refused" in reason and "local 127.0.0.1:9" in reason
    assert banner.startswith(b"SSH-2.0-OpenSSH")


def test_remote_forward_refused(g):
    async def go():
        async with g.connect() as conn:
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 9)
    run(go())


def test_remote_forward_allowed_by_rule(g):
    async def echo(reader, writer):
        writer.write(b"echo:" + await reader.read(100))
        await writer.drain()
        writer.close()

    async def go():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        local_port = server.sockets[0].getsockname()[1]
        async with g.connect("relay") as conn:
            listener = await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", local_port)
            # the forwarded port listens on the target (this machine): connect there
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.get_port())
            writer.write(b"ping")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(100), 10)
            writer.close()
            listener.close()
        server.close()
        return answer
    assert run(go()) == b"echo:ping"


def test_agent_forwarding_only_where_a_rule_allows_it(g, tmp_path):
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        assert wait_for(sock.exists)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(g.alice.key_path)], env=env, check=True, capture_output=True)
        args = ["ssh", *g.options(), "-o", "ForwardAgent=yes"]
        allowed = subprocess.run([*args, "relay@127.0.0.1", "ssh-add -l"], env=env, capture_output=True, timeout=60)
        refused = subprocess.run([*args, "web@127.0.0.1", "ssh-add -l"], env=env, capture_output=True, timeout=60)
    finally:
        agent.kill()
        agent.wait()
    assert allowed.returncode == 0, allowed.stderr
    assert b"alice" in allowed.stdout
    assert refused.returncode == 2
    assert b"Could not open a connection to your authentication agent" in refused.stderr


def test_openssh_local_forward_refused(g):
    """ssh -L: the listener is the client's own; the gateway refuses each forwarded connection."""
    port = free_port()
    options = [o if o != "LogLevel=ERROR" else "LogLevel=INFO" for o in g.options()]
    proc = subprocess.Popen(["ssh", *options, "-N", "-L", f"127.0.0.1:{port}:127.0.0.1:9", "web@127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def connected():
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                return None
        sock = wait_for(connected)
        assert sock is not None
        with sock:
            sock.settimeout(10)
            assert sock.recv(100) == b""  # closed at once: the channel open was refused
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert b"forwarding refused" in err and b"local 127.0.0.1:9" in err


# ---- host key pinning -----------------------------------------------------------------------

def test_pinned_host_key_mismatch_refused(g):
    res = g.ssh("pinned-wrong", "echo should-not-run")
    assert res.returncode == 255
    assert b"should-not-run" not in res.stdout
    assert b"does not match its pinned known_hosts" in res.stderr


# ---- bad input ------------------------------------------------------------------------------

def test_hundreds_of_channels_are_limited(g):
    async def go():
        async with g.connect() as conn:
            opened, refused = [], 0
            for _ in range(200):
                try:
                    chan, _ = await conn.create_session(asyncssh.SSHClientSession, "sleep 5")
                    opened.append(chan)
                except asyncssh.ChannelOpenError:
                    refused += 1
            for chan in opened:
                chan.close()
            return len(opened), refused
    opened, refused = run(go())
    assert opened <= 32 and refused >= 168
    assert g.ssh("web", "echo next").stdout == b"next\n"


def test_garbage_after_banner_is_cut_off(g):
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        banner = s.recv(256)
        assert banner.startswith(b"SSH-2.0-wiregate")
        s.sendall(b"SSH-2.0-evil\r\n" + os.urandom(4096))
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
    assert g.ssh("web", "echo next").stdout == b"next\n"
    assert g.gw.alive()
