"""The throwaway OpenSSH server (tests/e2e/sshd.py) works with the real clients the gateway must carry.

exec with separate stdout/stderr and exit status, sftp, scp in both modes, rsync, password login
(asyncssh) and host key pinning, straight against sshd with no gateway in between: when a gateway
test fails, this file says whether the target itself was at fault.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from gateway.sshserver import ThrowawaySshd, other_host_key_line, start_sshd

TIMEOUT = 15


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawaySshd]:
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, **kw)  # type: ignore[call-overload]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    p = tmp_path / "payload.bin"
    p.write_bytes(os.urandom(200_000) + b"\nC0644 3 x\n\0E\n")  # bytes that look like scp records, too
    return p


def test_exec_stdout_stderr_and_exit_status(sshd: ThrowawaySshd) -> None:
    res = run(["ssh", *sshd.ssh_args(), "echo hi; echo err >&2; exit 3"])
    assert res.returncode == 3
    assert res.stdout == "hi\n"
    assert res.stderr.splitlines()[-1] == "err"


def test_host_key_line_and_known_hosts(sshd: ThrowawaySshd, tmp_path: Path) -> None:
    host, kind, blob = sshd.host_key_line.split()
    assert (host, kind) == (f"[127.0.0.1]:{sshd.port}", "ssh-ed25519")
    assert blob.startswith("AAAA")
    kh = sshd.write_known_hosts(tmp_path / "kh")
    assert kh.read_text() == sshd.host_key_line + "\n"


def test_other_host_key_is_refused(sshd: ThrowawaySshd, tmp_path: Path) -> None:
    other = other_host_key_line(sshd.port)
    assert other.split()[:2] == sshd.host_key_line.split()[:2] and other != sshd.host_key_line
    kh = tmp_path / "wrong_known_hosts"
    kh.write_text(other + "\n")
    args = [a.replace(str(sshd.known_hosts), str(kh)) for a in sshd.ssh_args()]
    res = run(["ssh", *args, "true"])
    assert res.returncode == 255
    assert "HOST IDENTIFICATION HAS CHANGED" in res.stderr


def test_sftp_batch_round_trip(sshd: ThrowawaySshd, payload: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    back = tmp_path / "back.bin"
    batch = tmp_path / "batch"
    batch.write_text(f"put {payload} {remote}/up.bin\nget {remote}/up.bin {back}\n")
    res = run(["sftp", *sshd.client_options(), "-b", str(batch), sshd.destination])
    assert res.returncode == 0, res.stderr
    assert sha256(remote / "up.bin") == sha256(back) == sha256(payload)


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_round_trip(sshd: ThrowawaySshd, payload: Path, tmp_path: Path, legacy: bool) -> None:
    mode = ["-O"] if legacy else []
    remote = tmp_path / "remote"
    remote.mkdir()
    res = run(["scp", *mode, *sshd.client_options(), str(payload), f"{sshd.destination}:{remote}/up.bin"])
    assert res.returncode == 0, res.stderr
    back = tmp_path / "back.bin"
    res = run(["scp", *mode, *sshd.client_options(), f"{sshd.destination}:{remote}/up.bin", str(back)])
    assert res.returncode == 0, res.stderr
    assert sha256(remote / "up.bin") == sha256(back) == sha256(payload)


def test_rsync_round_trip(sshd: ThrowawaySshd, payload: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "p.bin").write_bytes(payload.read_bytes())
    (src / "a.txt").write_text("hello\n")
    remote, back = tmp_path / "remote", tmp_path / "back"
    res = run(["rsync", "-a", "-e", sshd.ssh_command(), f"{src}/", f"{sshd.destination}:{remote}/"])
    assert res.returncode == 0, res.stderr
    res = run(["rsync", "-a", "-e", sshd.ssh_command(), f"{sshd.destination}:{remote}/", f"{back}/"])
    assert res.returncode == 0, res.stderr
    assert sha256(back / "sub" / "p.bin") == sha256(payload)
    assert (back / "a.txt").read_text() == "hello\n"


def test_password_login_with_asyncssh(sshd: ThrowawaySshd) -> None:
    name, password = sshd.ensure_password_user()
    # idempotent: a second call resets the password of the existing user
    name2, password = sshd.ensure_password_user(name, password + "2")
    assert name2 == name

    async def login(pw: str) -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(sshd.host, port=sshd.port, username=name, password=pw,
                                    known_hosts=str(sshd.known_hosts), client_keys=None, agent_path=None,
                                    connect_timeout=TIMEOUT) as conn:
            return await conn.run("id -un; pwd", check=True, timeout=TIMEOUT)

    res = asyncio.run(login(password))
    who, home = res.stdout.split()
    assert who == name
    assert home.endswith(f"/{name}")
    assert os.stat(home).st_uid == pwd.getpwnam(name).pw_uid != 0
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(login(password + "-wrong"))


def test_stop_frees_the_port(tmp_path: Path) -> None:
    server = ThrowawaySshd(base_dir=tmp_path).start()
    port = server.port
    assert server.running
    server.stop()
    assert not server.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
