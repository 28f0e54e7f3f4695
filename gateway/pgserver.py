"""A throwaway PostgreSQL server for tests, the demo and the benchmarks.

    with ThrowawayPostgres(auth="md5") as pg:
        pg.create_role("app", "secret")
        pg.create_database("app", owner="app")
        print(pg.dsn("app", user="app", sslmode="require"))

The server lives in a temporary directory (data dir, unix socket, log), listens
on 127.0.0.1 only, runs with ``fsync=off`` and is removed again by ``stop()``.
It uses the server binaries of Debian's ``postgresql`` package
(``/usr/lib/postgresql/<version>/bin``); ``WIREGATE_PG_BINDIR`` overrides the
search. PostgreSQL refuses to run as root: when the caller is root, the data
directory is handed to the ``nobody`` user and every server command runs
through ``runuser -u nobody --``.

Nothing global is registered (no atexit hook, no signal handler): whoever
starts a server stops it, ideally with ``with``.
"""

from __future__ import annotations

import datetime as _dt
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote, urlencode

from gateway.errors import WiregateError
from gateway.tls import self_signed_pem

__all__ = [
    "AUTH_METHODS",
    "PgServerError",
    "ThrowawayPostgres",
    "customers_sql",
    "expected_item",
    "fake_customers",
    "find_pg_bindir",
    "free_port",
    "items_sql",
    "luhn_valid",
    "sql_literal",
    "sql_ident",
]

AUTH_METHODS = ("scram-sha-256", "md5", "password", "trust")
SERVER_USER_WHEN_ROOT = "nobody"
_PREFERRED_MAJOR = 15
# sockaddr_un.sun_path is 108 bytes on Linux, including the NUL
_MAX_SOCKET_PATH = 107


class PgServerError(WiregateError):
    """The throwaway server could not be found, started or used."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sql_literal(value: str) -> str:
    """A PostgreSQL string literal for ``value`` (standard_conforming_strings on)."""
    if "\x00" in value:
        raise ValueError("NUL byte in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def sql_ident(name: str) -> str:
    """A quoted PostgreSQL identifier."""
    if "\x00" in name:
        raise ValueError("NUL byte in SQL identifier")
    return '"' + name.replace('"', '""') + '"'


def _major(bindir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); "9.6" -> (9, 6)
    try:
        return tuple(int(p) for p in bindir.parent.name.split("."))
    except ValueError:
        return (0,)


def find_pg_bindir() -> Path:
    """The directory holding ``postgres``, ``initdb`` and ``pg_ctl``.

    Order: ``$WIREGATE_PG_BINDIR``; ``/usr/lib/postgresql/15/bin``; the newest
    other ``/usr/lib/postgresql/*/bin``; the directory of ``pg_ctl`` on PATH.
    """
    needed = ("postgres", "initdb", "pg_ctl")

    def complete(d: Path) -> bool:
        return all(os.access(d / n, os.X_OK) for n in needed)

    env = os.environ.get("WIREGATE_PG_BINDIR")
    if env:
        d = Path(env)
        if complete(d):
            return d
        raise PgServerError(f"WIREGATE_PG_BINDIR={env} does not hold {', '.join(needed)}")
    found = [d for d in (Path(p).parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")) if complete(d)]
    preferred = [d for d in found if _major(d) == (_PREFERRED_MAJOR,)]
    if preferred:
        return preferred[0]
    if found:
        return max(found, key=_major)
    on_path = shutil.which("pg_ctl")
    if on_path:
        d = Path(on_path).resolve().parent
        if complete(d):
            return d
    raise PgServerError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install Debian's postgresql: sudo apt-get install postgresql (or set WIREGATE_PG_BINDIR)"
    )


def _clean_env() -> dict[str, str]:
    """The environment without libpq/PostgreSQL variables that could redirect a command."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.setdefault("LC_ALL", "C.UTF-8" if Path("/usr/lib/locale/C.utf8").exists() else "C")
    return env


def _reachable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether every directory from / down to ``path`` can be traversed by uid/gid."""
    p = path.resolve()
    for d in [*reversed(p.parents), p]:
        st = d.stat()
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# --------------------------------------------------------------------------- the server


class ThrowawayPostgres:
    """A PostgreSQL server in a temp dir; a context manager (``with`` starts and stops it).

    Attributes once started: ``host`` ("127.0.0.1"), ``port``, ``password`` (the
    superuser's), ``superuser``, ``auth``, ``root_dir`` (the temp dir),
    ``data_dir``, ``socket_dir``, ``log_file``, ``cert_file`` (``None`` without
    SSL), ``bindir``.
    """

    host = "127.0.0.1"

    def __init__(self, *, auth: str = "scram-sha-256", ssl: bool = True, port: int | None = None,
                 superuser: str = "postgres", password: str | None = None, base_dir: Path | None = None,
                 settings: dict[str, str] | None = None, keep: bool = False, start_timeout: float = 60.0):
        if auth not in AUTH_METHODS:
            raise PgServerError(f"auth must be one of {', '.join(AUTH_METHODS)}, not {auth!r}")
        self.auth = auth
        self.ssl = ssl
        self._requested_port = port
        self.port: int = port or 0
        self.superuser = superuser
        self.password = password if password is not None else secrets.token_urlsafe(18)
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.settings = dict(settings or {})
        self.keep = keep
        self.start_timeout = start_timeout
        self.bindir: Path | None = None
        self.root_dir: Path | None = None
        self.data_dir: Path | None = None
        self.socket_dir: Path | None = None
        self.log_file: Path | None = None
        self.cert_file: Path | None = None
        self._extra_socket_dir: Path | None = None
        self._as_root = os.geteuid() == 0
        self._server_uid = os.geteuid()
        self._server_gid = os.getegid()
        self._role_passwords: dict[str, str] = {superuser: self.password}
        self._running = False

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<ThrowawayPostgres {self.auth} ssl={self.ssl} {self.host}:{self.port} {state} {self.root_dir}>"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> "ThrowawayPostgres":
        """initdb, configure and start the server; on failure clean up and raise ``PgServerError``."""
        if self._running:
            return self
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.bindir = find_pg_bindir()
        if self._as_root:
            try:
                pw = pwd.getpwnam(SERVER_USER_WHEN_ROOT)
            except KeyError:
                raise PgServerError(f"running as root but there is no user {SERVER_USER_WHEN_ROOT!r} to run PostgreSQL as") from None
            self._server_uid, self._server_gid = pw.pw_uid, pw.pw_gid
            if shutil.which("runuser") is None:
                raise PgServerError("running as root needs `runuser` (util-linux) to start PostgreSQL as nobody")
        if self.base_dir is not None:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="wiregate-pg-", dir=self.base_dir))
        self.root_dir = root
        if self._as_root:
            self._give(root)
            if not _reachable_by(root, self._server_uid, self._server_gid):
                raise PgServerError(
                    f"{root} is not reachable by user {SERVER_USER_WHEN_ROOT} (a parent directory lacks o+x); "
                    "use a base_dir under /tmp")
        self.data_dir = root / "data"
        self.log_file = root / "postgres.log"
        if len(str(root / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
            self.socket_dir = root
        else:  # a deep base_dir: keep the socket in a short path
            self._extra_socket_dir = Path(tempfile.mkdtemp(prefix="wgpg-", dir="/tmp"))
            self._give(self._extra_socket_dir)
            self.socket_dir = self._extra_socket_dir

        pwfile = root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._give(pwfile)
        try:
            self._run_server_cmd([
                str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                f"--pwfile={pwfile}", "--auth-local=trust", f"--auth-host={self.auth}",
                "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions",
            ], what="initdb", timeout=180)
        finally:
            pwfile.unlink(missing_ok=True)

        self._write_hba()
        if self.ssl:
            cert, key = self_signed_pem("localhost", ["localhost", "127.0.0.1", "::1"], "wiregate throwaway PostgreSQL")
            self.cert_file = self.data_dir / "server.crt"
            key_file = self.data_dir / "server.key"
            self.cert_file.write_bytes(cert)
            key_file.write_bytes(key)
            key_file.chmod(0o600)
            self._give(self.cert_file)
            self._give(key_file)
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write("\n# added by wiregate's ThrowawayPostgres\ninclude 'wiregate.conf'\n")

        attempts = 1 if self._requested_port else 4
        for attempt in range(attempts):
            if not self._requested_port:
                self.port = free_port(self.host)
            self._write_conf()
            ok, why = self._pg_ctl_start()
            if ok:
                break
            log = log_tail(self.log_file)
            port_taken = "could not bind" in log or "Address already in use" in log
            if not port_taken or attempt == attempts - 1:
                raise PgServerError(f"PostgreSQL did not start ({why}); log {self.log_file}:\n{log}")
            self.log_file.write_text("")  # next attempt: a fresh log
        self._running = True

        if self.auth == "md5":
            # initdb stored the superuser's password with the bootstrap default
            # (SCRAM); md5 auth then silently negotiates SCRAM. Store it as MD5.
            self.psql(f"SET password_encryption = 'md5';\n"
                      f"ALTER ROLE {sql_ident(self.superuser)} PASSWORD {sql_literal(self.password)};")

    def _pg_ctl_start(self) -> tuple[bool, str]:
        assert self.root_dir and self.data_dir and self.log_file and self.bindir
        out = self.root_dir / "pg_ctl.out"
        with open(out, "wb") as fh:
            cmd = self._server_prefix() + [
                str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", str(int(self.start_timeout)), "start",
            ]
            try:
                # own session: a Ctrl-C in the caller's terminal must not reach
                # the postmaster; stop() shuts it down.
                rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=self.root_dir, env=_clean_env(), start_new_session=True,
                                    timeout=self.start_timeout + 15).returncode
            except subprocess.TimeoutExpired:
                return False, "pg_ctl start timed out"
        msg = out.read_text(errors="replace").strip()
        out.unlink(missing_ok=True)
        if rc != 0:
            self._kill_postmaster()
            return False, msg.splitlines()[-1] if msg else f"pg_ctl exit status {rc}"
        return True, ""

    def stop(self) -> None:
        """Stop the server (``pg_ctl -m immediate``) and remove the temp dir unless ``keep``.

        Safe to call more than once, and after a failed ``start()``.
        """
        if self.data_dir is not None and (self.data_dir / "postmaster.pid").exists() and self.bindir:
            try:
                self._run_server_cmd([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                                      "-w", "-t", "30", "stop"], what="pg_ctl stop", timeout=45, check=False)
            except (PgServerError, OSError, subprocess.SubprocessError):
                pass
            self._kill_postmaster()
        self._running = False
        if not self.keep:
            for d in (self.root_dir, self._extra_socket_dir):
                if d is not None and d.exists():
                    shutil.rmtree(d, ignore_errors=True)
            self._extra_socket_dir = None

    def _kill_postmaster(self) -> None:
        """Last resort: SIGKILL the postmaster named in postmaster.pid, if it still runs."""
        if self.data_dir is None:
            return
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)

    # ------------------------------------------------------------ configuration

    def _server_prefix(self) -> list[str]:
        return ["runuser", "-u", SERVER_USER_WHEN_ROOT, "--"] if self._as_root else []

    def _give(self, path: Path) -> None:
        """Hand a file or directory we created to the server user (a no-op unless root)."""
        if self._as_root:
            os.chown(path, self._server_uid, self._server_gid)

    def _run_server_cmd(self, cmd: list[str], *, what: str, timeout: float, check: bool = True) -> str:
        try:
            p = subprocess.run(self._server_prefix() + cmd, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, cwd=self.root_dir, env=_clean_env(), timeout=timeout,
                               start_new_session=True)
        except subprocess.TimeoutExpired:
            raise PgServerError(f"{what} timed out after {timeout:.0f}s") from None
        if check and p.returncode != 0:
            raise PgServerError(f"{what} failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()}")
        return p.stdout

    def _write_hba(self) -> None:
        assert self.data_dir
        m = self.auth
        lines = [
            "# written by wiregate's ThrowawayPostgres",
            "# TYPE    DATABASE  USER  ADDRESS         METHOD",
            "local     all       all                   trust",
        ]
        if self.ssl:
            lines += [f"hostssl   all       all   127.0.0.1/32    {m}",
                      f"hostssl   all       all   ::1/128         {m}"]
        lines += [f"host      all       all   127.0.0.1/32    {m}",
                  f"host      all       all   ::1/128         {m}",
                  "local     replication all               trust",
                  f"host      replication all 127.0.0.1/32    {m}"]
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text("\n".join(lines) + "\n")
        self._give(hba)

    def _write_conf(self) -> None:
        assert self.data_dir and self.socket_dir
        conf: dict[str, str] = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "64MB",
            "password_encryption": "md5" if self.auth == "md5" else "scram-sha-256",
            "ssl": "on" if self.ssl else "off",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_min_messages": "warning",
            "timezone": "UTC",
            "max_wal_size": "1GB",
        }
        if self.ssl:
            conf["ssl_cert_file"] = "server.crt"
            conf["ssl_key_file"] = "server.key"
        conf.update(self.settings)
        path = self.data_dir / "wiregate.conf"
        path.write_text("".join(f"{k} = {sql_literal(str(v))}\n" for k, v in conf.items()))
        self._give(path)

    # ------------------------------------------------------------ use

    def _need_running(self) -> None:
        if not self._running:
            raise PgServerError("the throwaway PostgreSQL is not running (call start() first)")

    def dsn(self, dbname: str = "postgres", user: str | None = None, password: str | None = None,
            **params: str) -> str:
        """A ``postgresql://`` URL over TCP to 127.0.0.1.

        ``user`` defaults to the superuser; ``password`` to the one this object
        knows for that user (superuser, or a role made with ``create_role``).
        Extra keyword arguments become query parameters (``sslmode="require"``).
        """
        user = user or self.superuser
        if password is None:
            password = self._role_passwords.get(user)
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        query = ("?" + urlencode(params)) if params else ""
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}{query}"

    def psql_command(self, dbname: str = "postgres", user: str | None = None) -> list[str]:
        """argv for psql over the unix socket (local auth is trust)."""
        assert self.bindir and self.socket_dir
        psql = self.bindir / "psql"
        exe = str(psql) if os.access(psql, os.X_OK) else (shutil.which("psql") or "psql")
        return [exe, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                "-p", str(self.port), "-U", user or self.superuser, "-d", dbname]

    def psql(self, sql: str, dbname: str = "postgres", user: str | None = None, timeout: float = 300) -> str:
        """Run ``sql`` (one or more statements) with psql over the unix socket; return stdout.

        Output is unaligned and tuples-only (``psql -A -t``): one row per line,
        columns separated by ``|``. Statements run one by one (so ``CREATE
        DATABASE`` may follow other statements); the first error stops the run
        and raises ``PgServerError`` carrying psql's stderr.
        """
        self._need_running()
        env = _clean_env()
        env["PGCONNECT_TIMEOUT"] = "10"
        try:
            p = subprocess.run(self.psql_command(dbname, user) + ["-f", "-"], input=sql, capture_output=True,
                               text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PgServerError(f"psql timed out after {timeout:.0f}s") from None
        if p.returncode != 0:
            raise PgServerError(f"psql failed (exit {p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def create_role(self, name: str, password: str | None, auth: str | None = None, *,
                    superuser: bool = False, login: bool = True) -> None:
        """CREATE ROLE with a password stored for ``auth``.

        ``auth`` picks how the password is stored: "md5" or "scram-sha-256"
        (default: md5 on an md5 server, else scram). Note that an md5 server
        authenticates a role stored as SCRAM with SCRAM.
        """
        enc = auth or ("md5" if self.auth == "md5" else "scram-sha-256")
        if enc not in ("md5", "scram-sha-256"):
            raise PgServerError(f"create_role: auth must be md5 or scram-sha-256, not {enc!r}")
        opts = ["LOGIN" if login else "NOLOGIN"]
        if superuser:
            opts.append("SUPERUSER")
        if password is not None:
            opts.append(f"PASSWORD {sql_literal(password)}")
        self.psql(f"SET password_encryption = {sql_literal(enc)};\n"
                  f"CREATE ROLE {sql_ident(name)} {' '.join(opts)};\n")
        if password is not None:
            self._role_passwords[name] = password

    def create_database(self, name: str, owner: str | None = None) -> None:
        owner_sql = f" OWNER {sql_ident(owner)}" if owner else ""
        self.psql(f"CREATE DATABASE {sql_ident(name)}{owner_sql};\n")

    def role_password(self, name: str) -> str | None:
        return self._role_passwords.get(name)


# --------------------------------------------------------------------------- fake data

_FIRST = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Fatima", "Gustav", "Hana", "Ivan", "Julia", "Kofi",
          "Lena", "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tomoko", "Ugo", "Vera",
          "Wei", "Ximena", "Yusuf", "Zoe"]
_LAST = ["Abbott", "Bianchi", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
         "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi",
         "Schmidt", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz", "Zhang"]
_DOMAINS = ["example.com", "example.org", "example.net"]
# Visa / Mastercard / Amex / Discover test-range prefixes and lengths
_CARD_PREFIXES = [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)]
_NOTES = [
    "Asked to send the invoice to {email} instead.",
    "Prefers contact by mail: {email}. Do not call before 10am.",
    "Old address {email} bounces; phone {phone} works.",
    "VIP since 2019. Assistant's email is {email}.",
    "Disputed a charge on card ending {last4}; follow up via {email}.",
    "Called from {phone} about a refund; confirmation sent to {email}.",
]


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return len(digits) >= 12 and total % 10 == 0


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable")


def fake_customers(n: int, seed: int = 7) -> list[dict[str, str]]:
    """``n`` deterministic fake customers: name, email, ssn, phone, card, note.

    Everything is fake: emails on the reserved example.* domains, phone numbers
    in the fictional 555-01xx range, SSN-shaped numbers, Luhn-valid card
    numbers in test-card ranges (digits only), notes that always contain an
    email address and sometimes a phone number or card digits. Row ``i`` does
    not depend on ``n``, so the first 50 of 200 are the 50 of a 50-row seed.
    """
    rows = []
    for i in range(n):
        r = random.Random(seed * 1_000_003 + i)
        first, last = r.choice(_FIRST), r.choice(_LAST)
        email = f"{first.lower()}.{last.lower()}{i}@{r.choice(_DOMAINS)}"
        area = r.randrange(100, 900)
        if area == 666:
            area = 665
        ssn = f"{area:03d}-{r.randrange(1, 100):02d}-{r.randrange(1, 10000):04d}"
        phone = f"+1 ({r.randrange(201, 990)}) 555-01{r.randrange(0, 100):02d}"
        prefix, length = r.choice(_CARD_PREFIXES)
        body = prefix + "".join(str(r.randrange(10)) for _ in range(length - len(prefix) - 1))
        card = _luhn_complete(body)
        alt = f"{first[0].lower()}{last.lower()}.{r.choice(['home', 'work', 'alt'])}@{r.choice(_DOMAINS)}"
        note = r.choice(_NOTES).format(email=alt, phone=phone, last4=card[-4:])
        rows.append({"name": f"{first} {last}", "email": email, "ssn": ssn, "phone": phone,
                     "card": card, "note": note})
    return rows


def customers_sql(n: int, owner: str | None = None, seed: int = 7) -> str:
    """SQL creating and filling ``customers(id, name, email, ssn, phone, card, note)``.

    With ``owner``, runs as that role (``SET ROLE``) so the table belongs to it.
    """
    head = f"SET ROLE {sql_ident(owner)};\n" if owner else ""
    head += ("CREATE TABLE customers (id serial PRIMARY KEY, name text, email text, ssn text, "
             "phone text, card text, note text);\n")
    cols = ("name", "email", "ssn", "phone", "card", "note")
    values = ",\n".join("(" + ", ".join(sql_literal(row[c]) for c in cols) + ")" for row in fake_customers(n, seed))
    body = f"INSERT INTO customers (name, email, ssn, phone, card, note) VALUES\n{values};\n" if n else ""
    tail = "RESET ROLE;\n" if owner else ""
    return head + body + tail


def items_sql(n: int, owner: str | None = None) -> str:
    """SQL creating ``items(id int pk, label text, qty int, price numeric, created timestamptz)`` with ``n`` rows."""
    head = f"SET ROLE {sql_ident(owner)};\n" if owner else ""
    tail = "RESET ROLE;\n" if owner else ""
    return head + (
        "CREATE TABLE items (id int PRIMARY KEY, label text, qty int, price numeric, created timestamptz);\n"
        "INSERT INTO items (id, label, qty, price, created)\n"
        "  SELECT g, 'item-' || lpad(g::text, 4, '0'), (g * 37) % 100,\n"
        "         round(((g * 7919) % 100000) / 100.0, 2),\n"
        "         timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour'\n"
        f"  FROM generate_series(1, {int(n)}) AS g;\n"
    ) + tail


def expected_item(i: int) -> tuple[int, str, int, Decimal, _dt.datetime]:
    """Row ``i`` of ``items_sql`` as Python values (for assertions in tests)."""
    return (i, f"item-{i:04d}", (i * 37) % 100, (Decimal((i * 7919) % 100000) / 100).quantize(Decimal("0.01")),
            _dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(hours=i))
