"""A throwaway OpenSSH server: the SSH target of `wiregate demo`, the benchmarks and the end-to-end tests.

    with ThrowawaySshd(base_dir=tmp_path) as sshd:
        subprocess.run(["ssh", *sshd.ssh_args(), "echo hi"], check=True)

It runs Debian's ``/usr/sbin/sshd`` (package ``openssh-server``) in the
foreground (``-D -e``) on a free port of 127.0.0.1, with everything it needs
under one directory: a generated ed25519 host key, the config, the pid file, the
log (sshd's stderr) and the authorized keys. Root logs in with a generated
client key (``client_key``); ``ensure_password_user()`` adds a local user that
logs in with a password. sftp runs as ``internal-sftp``, so sftp, scp (SFTP mode
and legacy ``-O``) and rsync all work against it.

Side effects on the machine, acceptable on throwaway CI machines only: sshd
needs its privilege separation directory ``/run/sshd`` (created when missing)
and ``ensure_password_user()`` edits ``/etc/passwd`` and ``/etc/shadow``. Tests
run as root (sshd must, to switch users).

Nothing global is registered: whoever starts a server stops it (``with``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from gateway.pgserver import free_port

__all__ = ["SSHD", "SshdError", "ThrowawaySshd", "other_host_key_line", "start_sshd"]

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")
HOST = "127.0.0.1"
_STOP_TIMEOUT = 5.0


class SshdError(RuntimeError):
    """The throwaway sshd could not be found, started or used."""


def _keygen() -> str:
    found = shutil.which(SSH_KEYGEN)
    if not found:
        raise SshdError("ssh-keygen not found; install Debian's openssh-client: apt-get install openssh-client")
    return found


def _generate_key(path: Path, comment: str) -> str:
    """Write an ed25519 key pair at ``path``/``path.pub``; return the public key's "type base64" part."""
    res = subprocess.run([_keygen(), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                         capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise SshdError(f"ssh-keygen failed for {path}: {res.stderr.strip()}")
    kind, blob = path.with_name(path.name + ".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _known_hosts_host(port: int, host: str = HOST) -> str:
    # OpenSSH writes non-default ports as "[host]:port"
    return host if port == 22 else f"[{host}]:{port}"


def other_host_key_line(port: int, host: str = HOST) -> str:
    """A ``known_hosts`` line for ``[host]:port`` with a fresh, unrelated ed25519 key.

    Pin this instead of the real ``host_key_line`` to test that a host key
    mismatch refuses the session.
    """
    with tempfile.TemporaryDirectory(prefix="wg-otherkey-") as d:
        return f"{_known_hosts_host(port, host)} {_generate_key(Path(d) / 'key', 'other')}"


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether every directory from / down to ``path`` can be traversed by uid/gid."""
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _run_admin(cmd: list[str], *, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a shadow-utils command, retrying while another process holds the passwd lock."""
    for _ in range(20):
        res = subprocess.run(cmd, input=input_text, capture_output=True, text=True, timeout=30)
        if res.returncode == 0 or "lock" not in (res.stderr or "").lower():
            return res
        time.sleep(0.1)
    return res


class ThrowawaySshd:
    """An OpenSSH server under a temp dir; a context manager (``with`` starts and stops it).

    Attributes once started: ``host`` ("127.0.0.1"), ``port``, ``root_dir``,
    ``config_file``, ``log_file`` (sshd's stderr), ``host_key`` (private key
    path), ``host_key_line`` (``[127.0.0.1]:PORT ssh-ed25519 AAAA...``),
    ``known_hosts`` (a file holding that line), ``client_key`` (root's
    authorized private key; ``client_key.pub`` next to it).

    ``log_level`` is sshd's ``LogLevel`` (``DEBUG`` logs every exec command);
    ``extra_config`` lines are appended to the generated ``sshd_config``.
    """

    host = HOST

    def __init__(self, *, base_dir: Path | None = None, log_level: str = "VERBOSE",
                 extra_config: list[str] | tuple[str, ...] = (), start_timeout: float = 15.0) -> None:
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.log_level = log_level
        self.extra_config = tuple(extra_config)
        self.start_timeout = start_timeout
        self.port = 0
        self.root_dir: Path | None = None
        self.config_file: Path | None = None
        self.log_file: Path | None = None
        self.host_key: Path | None = None
        self.host_key_line = ""
        self.known_hosts: Path | None = None
        self.client_key: Path | None = None
        self._authorized_dir: Path | None = None
        self._own_dirs: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle = None

    # ------------------------------------------------------------------ life cycle

    def __enter__(self) -> ThrowawaySshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ThrowawaySshd:
        """Generate keys and config, start sshd, return once the port accepts connections."""
        if self._proc is not None:
            raise SshdError("sshd already started")
        if not os.access(SSHD, os.X_OK):
            raise SshdError(f"{SSHD} not found; install Debian's openssh-server: apt-get install openssh-server")
        if os.geteuid() != 0:
            raise SshdError("the throwaway sshd must run as root (it switches to the logged-in user)")
        # sshd refuses to start without its privilege separation directory
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.base_dir is not None:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="sshd-", dir=self.base_dir))
        else:
            root = Path(tempfile.mkdtemp(prefix="wg-sshd-"))
            self._own_dirs.append(root)
        # other users (the password user) must be able to reach their home below it
        root.chmod(0o755)
        self.root_dir = root
        self._authorized_dir = root / "authorized_keys"
        self._authorized_dir.mkdir()
        self.host_key = root / "ssh_host_ed25519_key"
        host_pub = _generate_key(self.host_key, "wiregate-test-host")
        self.client_key = root / "client_ed25519"
        client_pub = _generate_key(self.client_key, "wiregate-test-client")
        self.authorize("root", client_pub)
        self.known_hosts = root / "known_hosts"
        # a port taken between free_port() and sshd's bind makes sshd exit: try a few ports
        last_error = ""
        for _ in range(3):
            self.port = free_port()
            self.host_key_line = f"{_known_hosts_host(self.port)} {host_pub}"
            self.known_hosts.write_text(self.host_key_line + "\n")
            self._write_config()
            try:
                self._spawn()
                return self
            except SshdError as e:
                last_error = str(e)
                if "Address already in use" not in last_error:
                    self.stop()
                    raise
        self.stop()
        raise SshdError(last_error)

    def _write_config(self) -> None:
        assert self.root_dir is not None
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.root_dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self._authorized_dir}/%u",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PermitEmptyPasswords no",
            "Subsystem sftp internal-sftp",
            "AllowTcpForwarding yes",
            "AllowAgentForwarding yes",
            "X11Forwarding no",
            "PrintMotd no",
            "PrintLastLog no",
            "AcceptEnv LANG LC_*",
            f"LogLevel {self.log_level}",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            *self.extra_config,
        ]
        self.config_file = self.root_dir / "sshd_config"
        self.config_file.write_text("\n".join(lines) + "\n")

    def _spawn(self) -> None:
        assert self.root_dir is not None and self.config_file is not None
        self.log_file = self.root_dir / "sshd.log"
        self._log_handle = open(self.log_file, "ab")  # noqa: SIM115 - closed in stop()
        # sshd re-executes itself and insists on an absolute path
        self._proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config_file)],
                                      stdin=subprocess.DEVNULL, stdout=self._log_handle, stderr=self._log_handle)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._reap()
                raise SshdError(f"sshd exited with status {code} while starting:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SshdError(f"sshd did not accept connections on {self.host}:{self.port} "
                                f"within {self.start_timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def _reap(self) -> None:
        self._proc = None
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def stop(self) -> None:
        """Terminate sshd (kill it when it does not stop in time) and remove what this object created."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT)
        self._reap()
        while self._own_dirs:
            shutil.rmtree(self._own_dirs.pop(), ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ clients

    @property
    def destination(self) -> str:
        return f"root@{self.host}"

    def authorize(self, user: str, public_key: str) -> None:
        """Add ``public_key`` (an ``authorized_keys`` line) to ``user``'s authorized keys."""
        if self._authorized_dir is None:
            raise SshdError("start the server first")
        with open(self._authorized_dir / user, "a") as f:
            f.write(public_key.strip() + "\n")

    def write_known_hosts(self, path: Path | str) -> Path:
        """Write a ``known_hosts`` file pinning this server's host key; return its path."""
        p = Path(path)
        p.write_text(self.host_key_line + "\n")
        return p

    def client_options(self) -> list[str]:
        """``-o`` options for ssh, scp and sftp alike (no port flag, which differs: -p vs -P)."""
        if self.client_key is None or self.known_hosts is None:
            raise SshdError("start the server first")
        return ["-F", "/dev/null",  # ignore the machine's and root's ssh_config
                "-o", f"Port={self.port}", "-o", f"IdentityFile={self.client_key}", "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes"]

    def ssh_args(self) -> list[str]:
        """Arguments for ``ssh`` as root on this server; append the remote command."""
        if self.client_key is None or self.known_hosts is None:
            raise SshdError("start the server first")
        return ["-F", "/dev/null", "-p", str(self.port), "-i", str(self.client_key), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", self.destination]

    def ssh_command(self) -> str:
        """The ssh command line as one string, for ``rsync -e`` (the destination is rsync's to give)."""
        return shlex.join(["ssh", *self.client_options()])

    def log_text(self) -> str:
        """Everything sshd logged so far."""
        if self.log_file is None:
            return ""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(empty log)"

    # ------------------------------------------------------------------ password user

    def ensure_password_user(self, name: str = "wgtest", password: str | None = None) -> tuple[str, str]:
        """Make a local user ``name`` that logs in with ``password``; return ``(name, password)``.

        Changes the machine's ``/etc/passwd`` and ``/etc/shadow`` (meant for
        throwaway CI machines): ``useradd -M -d HOME -s /bin/bash`` when the user
        is missing; when it exists, its home is pointed at this server's temp dir
        and its password reset. The user stays behind after ``stop()``. The home
        is ``ROOT/home/NAME``, or a separate temp dir (removed by ``stop()``) when
        ``ROOT`` is not reachable by other users (pytest's ``tmp_path`` is not).
        """
        if self.root_dir is None:
            raise SshdError("start the server first")
        password = password if password is not None else secrets.token_urlsafe(12)
        if ":" in name or "\n" in password or "\n" in name:
            raise SshdError("user name or password not usable with chpasswd")
        for tool in ("useradd", "usermod", "chpasswd"):
            if not shutil.which(tool):
                raise SshdError(f"{tool} not found; install Debian's passwd package")
        home_parent = self.root_dir / "home"
        home_parent.mkdir(exist_ok=True)
        if not _reachable_by(home_parent, 65534, 65534):
            home_parent = Path(tempfile.mkdtemp(prefix="wg-sshd-home-"))
            home_parent.chmod(0o755)
            self._own_dirs.append(home_parent)
        home = home_parent / name
        home.mkdir(exist_ok=True)
        try:
            pwd.getpwnam(name)
            exists = True
        except KeyError:
            exists = False
        if not exists:
            res = _run_admin(["useradd", "-M", "-d", str(home), "-s", "/bin/bash", name])
            # 9: created meanwhile by a parallel test run
            if res.returncode not in (0, 9):
                raise SshdError(f"useradd {name} failed: {res.stderr.strip()}")
        res = _run_admin(["usermod", "-d", str(home), "-s", "/bin/bash", name])
        if res.returncode != 0:
            raise SshdError(f"usermod {name} failed: {res.stderr.strip()}")
        res = _run_admin(["chpasswd"], input_text=f"{name}:{password}\n")
        if res.returncode != 0:
            raise SshdError(f"chpasswd for {name} failed: {res.stderr.strip()}")
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o755)
        return name, password


def start_sshd(tmp_path: Path, **kwargs: object) -> ThrowawaySshd:
    """Start a ThrowawaySshd under ``tmp_path`` (keywords go to the constructor); the caller stops it."""
    return ThrowawaySshd(base_dir=tmp_path, **kwargs).start()  # type: ignore[arg-type]
