"""Side-by-side benchmarks: PostgreSQL direct vs PgBouncer vs wiregate, SSH and HTTP direct vs wiregate.

    python -m benchmarks.run            # full: 3 rounds, 10 s per pgbench run, pgbench scale 10
    python -m benchmarks.run --short    # CI: 1 round, 2 s per pgbench run, scale 2

The SSH part (``benchmarks/ssh.py``, its own docstring says what it measures)
runs after PostgreSQL and its proxies are stopped, so they do not share the CPUs;
the HTTP part (``benchmarks/http.py``) runs after the SSH part, likewise; then
``benchmarks/approvals.py`` times an approval given on one gateway releasing a statement
held on another that shares its PostgreSQL store.

One run starts a throwaway PostgreSQL (scram-sha-256), PgBouncer in session
mode in front of it, and four ``wiregate serve`` processes in front of it:
``gateway`` with three deny rules (so every statement goes through the policy
check) and recording on, ``gateway-norec`` the same with recording off,
``gateway-norules`` with none, and ``gateway-masked`` with the three deny rules
and three mask rules (a column, a column glob that matches nothing, detectors
on every value). Clients use ``sslmode=disable`` everywhere.
Measurements are interleaved (direct, pgbouncer, gateway, ...) so machine
noise hits all systems alike:

* ``pgbench -n -S`` with 1 client and with 8 clients (-j 2): TPS, average latency
* a large result, 200k rows x 5 columns, read with psql into /dev/null: seconds, MB/s
* in-process: the cost of a cached and of an uncached policy check

Results go to ``benchmarks/results/<UTC timestamp>.md`` and ``.json`` and to
``latest.md`` / ``latest.json`` (the SSH and HTTP figures in their "SSH" and
"HTTP" sections and ``ssh`` and ``http`` keys). Exit status 1 when a system
could not be measured (its column then says why).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.approvals import ApprovalsReport, render_approvals_markdown, run_approvals_benchmark
from benchmarks.http import HttpReport, render_http_markdown, run_http_benchmark
from benchmarks.report import fmt as _fmt
from benchmarks.ssh import SshReport, render_ssh_markdown, run_ssh_benchmark
from gateway.demo import render_config, start_gateway, stop_process, wait_listening
from gateway.errors import WiregateError
from gateway.pgserver import ThrowawayPostgres, free_port, log_tail

SYSTEMS = ("direct", "pgbouncer", "gateway", "gateway-norec", "gateway-norules", "gateway-masked")
# the rule sets of the three gateways (one process each, same target)
DENY_RULES = [{"name": "no-drop", "match": {"sql": ["DROP"]}, "action": "deny"},
              {"name": "no-truncate", "match": {"sql": ["TRUNCATE"]}, "action": "deny"},
              {"name": "no-alter-role", "match": {"sql": ["ALTER ROLE"]}, "action": "deny"}]
MASK_RULES = [{"name": "mask-filler", "action": "mask", "columns": ["pgbench_accounts.filler"], "style": "redact"},
              {"name": "hash-ssn", "action": "mask", "columns": ["*.ssn"], "style": "hash"},
              {"name": "pii", "action": "mask", "detectors": ["email", "credit_card"], "style": "redact"}]
GATEWAY_RULES = {"gateway": DENY_RULES, "gateway-norec": DENY_RULES, "gateway-norules": [],
                 "gateway-masked": DENY_RULES + MASK_RULES}
# every gateway records its sessions except this one, which measures what recording costs
NO_RECORDING = {"recording": {"enabled": False}}
BENCH_USER = "bench"
BENCH_DB = "bench"
GW_TARGET = "bench"
GW_USER = "bench"
GW_GROUP = "bench"
PASSWORD_ENV = "WIREGATE_BENCH_DB_PASSWORD"
LARGE_ROWS = 200_000
LARGE_QUERY = f"SELECT aid, bid, abalance, filler, aid * 2 FROM pgbench_accounts LIMIT {LARGE_ROWS}"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class Endpoint:
    """How a client reaches one of the three systems."""

    def __init__(self, name: str, port: int, user: str, password: str, dbname: str) -> None:
        self.name, self.port, self.user, self.password, self.dbname = name, port, user, password, dbname

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER=self.user, PGPASSWORD=self.password,
                   PGDATABASE=self.dbname, PGSSLMODE="disable", PGCONNECT_TIMEOUT="10")
        return env


# --------------------------------------------------------------------------- the three systems


def _tool(pg: ThrowawayPostgres, name: str) -> str:
    assert pg.bindir is not None
    p = pg.bindir / name
    if os.access(p, os.X_OK):
        return str(p)
    found = shutil.which(name)
    if not found:
        raise WiregateError(f"{name} not found; install Debian's postgresql-client")
    return found


def start_pgbouncer(workdir: Path, pg: ThrowawayPostgres, password: str) -> tuple[subprocess.Popen, int, str]:
    exe = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None)
    if not exe:
        raise WiregateError("pgbouncer not found; install Debian's pgbouncer")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.splitlines()[0].strip()
    workdir.mkdir()
    port = free_port()
    (workdir / "userlist.txt").write_text(f'"{BENCH_USER}" "{password}"\n')
    (workdir / "pgbouncer.ini").write_text(f"""\
[databases]
{BENCH_DB} = host=127.0.0.1 port={pg.port} dbname={BENCH_DB}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {workdir / "userlist.txt"}
pool_mode = session
max_client_conn = 200
default_pool_size = 20
server_tls_sslmode = disable
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits
logfile = {workdir / "pgbouncer.log"}
log_connections = 0
log_disconnections = 0
""")
    cmd = [exe, str(workdir / "pgbouncer.ini")]
    as_user: dict[str, Any] = {}
    (workdir / "userlist.txt").chmod(0o600)
    if os.geteuid() == 0:  # pgbouncer refuses to run as root: run it as nobody
        nobody = pwd.getpwnam("nobody")
        for p in (workdir, *workdir.iterdir()):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        # setuid directly rather than through runuser, whose parent waits 2 s
        # before passing on a SIGTERM
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    out = workdir / "stderr.log"
    with open(out, "ab") as fh:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, cwd=workdir,
                                start_new_session=True, **as_user)
    try:
        wait_listening(proc, "127.0.0.1", port, out, timeout=15)
    except WiregateError as e:
        _stop_group(proc)
        raise WiregateError(f"pgbouncer: {e}\n{log_tail(workdir / 'pgbouncer.log')}") from None
    return proc, port, version


def _stop_group(proc: subprocess.Popen | None) -> None:
    """Stop a child started in its own session by signalling its process group."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def start_wiregate(workdir: Path, pg: ThrowawayPostgres, password: str,
                   rules: list[dict], extra: dict | None = None) -> tuple[subprocess.Popen, int, str]:
    """wiregate serve with one target and the given rules; returns (process, port, dev token)."""
    workdir.mkdir()
    port = free_port()
    config_path = workdir / "wiregate.toml"
    config_path.write_text(render_config(
        {"gateway": {"state_dir": str(workdir / "state")},
         "listen": {"postgres": f"127.0.0.1:{port}"},
         "identity": {"dev_tokens": True},
         "policy": {"default": "allow"}, **(extra or {})},
        {"targets": [{"name": GW_TARGET, "protocol": "postgres", "address": f"127.0.0.1:{pg.port}",
                      "database": BENCH_DB, "user": BENCH_USER, "password_env": PASSWORD_ENV,
                      "tls": "disable", "allow_groups": [GW_GROUP]}],
         "rules": rules},
        header="generated by `python -m benchmarks.run`",
    ))
    try:
        from gateway.config import load_config
        from gateway.identity import issue_dev_token

        token = issue_dev_token(load_config(config_path), sub=GW_USER, groups=[GW_GROUP], ttl_seconds=4 * 3600)
    except ImportError as e:
        raise WiregateError(f"cannot mint a dev token: {e}") from None
    log_path = workdir / "gateway.log"
    proc = start_gateway(config_path, log_path, env={PASSWORD_ENV: password})
    try:
        wait_listening(proc, "127.0.0.1", port, log_path, timeout=15)
    except WiregateError:
        stop_process(proc)
        raise
    return proc, port, token


def recorded_statements(state_dir: Path) -> dict[str, int]:
    """Statements, session files and bytes in a gateway's recordings."""
    try:
        from recorder.events import Command
        from recorder.format import read_recording
    except ImportError:
        return {}
    files = sorted((state_dir / "recordings").rglob("*.wgrec")) if state_dir.exists() else []
    statements = sum(sum(isinstance(e, Command) for _, e in read_recording(f).events) for f in files)
    return {"statements": statements, "files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def check_masking_is_on(psql: str, ep: Endpoint) -> None:
    """The masked gateway must mask pgbench_accounts.filler, or its figures would mean nothing."""
    p = subprocess.run([psql, "-X", "-q", "-A", "-t", "-c", "SELECT filler FROM pgbench_accounts LIMIT 1"],
                       env=ep.env(), capture_output=True, text=True, timeout=60)
    from policy.masking import REDACTED

    if p.returncode != 0 or p.stdout.strip() != REDACTED:
        raise WiregateError(f"the masked gateway did not mask filler (exit {p.returncode}: "
                            f"{(p.stdout + p.stderr).strip()[:200]!r})")


def policy_check_costs(rounds: int = 5, calls: int = 20000) -> dict[str, float]:
    """µs per SessionPolicy.check_sql with the three deny rules: cached and uncached (in-process)."""
    import timeit

    from gateway.config import Config, Rule, RuleMatch
    from policy.engine import PolicyEngine

    cfg = Config(rules=[Rule(name=r["name"], action=r["action"], match=RuleMatch(**r["match"])) for r in DENY_RULES])
    engine = PolicyEngine(cfg)
    session = engine.session(protocol="postgres", target=GW_TARGET, identity=GW_USER, groups=[GW_GROUP])
    sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 1;"
    session.check_sql(sql)
    exact = min(timeit.repeat(lambda: session.check_sql(sql), number=calls, repeat=rounds)) / calls
    counter = iter(range(10**9))
    shape = min(timeit.repeat(lambda: session.check_sql(f"SELECT abalance FROM pgbench_accounts WHERE aid = {next(counter)};"),
                              number=calls, repeat=rounds)) / calls
    # a new statement every call: the analyzer's and the session's caches never hit
    miss = min(timeit.repeat(lambda: session.check_sql(f"SELECT abalance FROM pgbench_accounts_{next(counter)} WHERE aid = 1;"),
                             number=calls // 10, repeat=rounds)) / (calls // 10)
    return {"cached_us": exact * 1e6, "shape_us": shape * 1e6, "uncached_us": miss * 1e6}


def check_policy_is_on(psql: str, ep: Endpoint) -> None:
    """A DROP through the gateway must be refused with 42501, or the comparison would be unfair."""
    p = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "DROP TABLE IF EXISTS wiregate_bench_canary"],
                       env=ep.env(), capture_output=True, text=True, timeout=60)
    if p.returncode == 0 or "blocked by rule" not in p.stderr:
        raise WiregateError(f"the gateway did not block DROP (exit {p.returncode}: {p.stderr.strip()!r}); "
                            "the policy check is not active")


# --------------------------------------------------------------------------- measurements

_TPS = re.compile(r"^tps = ([0-9.]+)", re.M)
_LAT = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


def run_pgbench(pgbench: str, ep: Endpoint, clients: int, threads: int, seconds: int) -> dict[str, float]:
    cmd = [pgbench, "-n", "-S", "-c", str(clients), "-j", str(threads), "-T", str(seconds)]
    p = subprocess.run(cmd, env=ep.env(), capture_output=True, text=True, timeout=seconds + 120)
    tps, lat = _TPS.search(p.stdout), _LAT.search(p.stdout)
    failed = _FAILED.search(p.stdout)
    if p.returncode != 0 or not tps or not lat or (failed and int(failed.group(1))):
        detail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-3:]
        raise WiregateError(f"pgbench via {ep.name} failed (exit {p.returncode}): {' / '.join(detail)}")
    return {"tps": float(tps.group(1)), "latency_ms": float(lat.group(1))}


def run_large(psql: str, ep: Endpoint, nbytes: int) -> dict[str, float]:
    cmd = [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-o", os.devnull, "-c", LARGE_QUERY]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=ep.env(), capture_output=True, text=True, timeout=300)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise WiregateError(f"psql via {ep.name} failed (exit {p.returncode}): {p.stderr.strip()}")
    return {"seconds": secs, "mb_per_s": nbytes / secs / 1e6}


def large_result_bytes(psql: str, ep: Endpoint) -> tuple[int, int]:
    """(bytes, rows) of the large result as psql prints it unaligned (values, separators, newlines)."""
    p = subprocess.run([psql, "-X", "-q", "-A", "-t", "-c", LARGE_QUERY], env=ep.env(), capture_output=True,
                       timeout=300)
    if p.returncode != 0:
        raise WiregateError(f"psql direct failed: {p.stderr.decode(errors='replace').strip()}")
    return len(p.stdout), p.stdout.count(b"\n")


# --------------------------------------------------------------------------- report

SCENARIOS = [
    # key, title, kind
    ("select_1c", "pgbench -S, 1 client", "pgbench"),
    ("select_8c", "pgbench -S, 8 clients, 2 threads", "pgbench"),
    ("large_result", f"{LARGE_ROWS // 1000}k rows x 5 columns via psql", "large"),
]
METRICS = {"pgbench": [("tps", "TPS", True), ("latency_ms", "latency ms", False)],
           "large": [("seconds", "seconds", False), ("mb_per_s", "MB/s", True)]}


def _median(samples: list[dict[str, float]], key: str) -> float | None:
    vals = [s[key] for s in samples if key in s]
    return statistics.median(vals) if vals else None


def summarize(samples: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, _title, kind in SCENARIOS:
        out[key] = {}
        for metric, _label, _higher in METRICS[kind]:
            row = {sysname: _median(samples[key][sysname], metric) for sysname in SYSTEMS}
            gw, d, b = row["gateway"], row["direct"], row["pgbouncer"]
            row["gateway/direct"] = gw / d if gw and d else None
            row["gateway/pgbouncer"] = gw / b if gw and b else None
            masked, bare = row["gateway-masked"], row["gateway-norules"]
            row["masked/norules"] = masked / bare if masked and bare else None
            norec = row["gateway-norec"]
            row["rec on/off"] = gw / norec if gw and norec else None
            out[key][metric] = row
    tps = out["select_1c"]["tps"]
    added = None
    if tps["gateway"] and tps["direct"]:
        added = (1 / tps["gateway"] - 1 / tps["direct"]) * 1e6
    added_b = None
    if tps["pgbouncer"] and tps["direct"]:
        added_b = (1 / tps["pgbouncer"] - 1 / tps["direct"]) * 1e6
    out["added_us_per_txn_1c"] = {"gateway": added, "pgbouncer": added_b}
    return out


def render_markdown(meta: dict[str, Any], summary: dict[str, Any], errors: dict[str, str]) -> str:
    lines = [
        f"# wiregate benchmark — {meta['started']}",
        "",
        f"Mode **{meta['mode']}**: {meta['rounds']} round(s), {meta['seconds']} s per pgbench run, "
        f"pgbench scale {meta['scale']}, median of all samples. Interleaved runs "
        "(direct, pgbouncer, gateway, ...); clients use `sslmode=disable`.",
        "",
        f"- host: {meta['host']}",
        f"- PostgreSQL {meta['postgres']} (scram-sha-256, fsync off); {meta['pgbouncer']} (session mode, scram)",
        f"- wiregate {meta['wiregate']} (`serve`, one target), four instances: **gateway** with 3 deny rules "
        "(DROP, TRUNCATE, ALTER ROLE), recording every session; **gw no rec**: the same with recording off; "
        "**gw no rules**; **gw masked** with the 3 deny rules and 3 mask rules "
        "(`pgbench_accounts.filler` redact, `*.ssn` hash, detectors email + credit_card on every column)",
        f"- large result: `{LARGE_QUERY}` = {meta['large_bytes']:,} bytes of psql text output, "
        f"{meta['large_rows']:,} rows",
        "",
        "| scenario | metric | direct | pgbouncer | gateway | gw no rec | gw no rules | gw masked | gateway/direct "
        "| gateway/pgbouncer | rec on/off | masked/no rules |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, title, kind in SCENARIOS:
        for metric, label, _higher in METRICS[kind]:
            row = summary[key][metric]
            cells = [_fmt(row[s]) for s in SYSTEMS]
            cells += [_fmt(row["gateway/direct"], True), _fmt(row["gateway/pgbouncer"], True),
                      _fmt(row["rec on/off"], True), _fmt(row["masked/norules"], True)]
            lines.append(f"| {title} | {label} | " + " | ".join(cells) + " |")
    added = summary["added_us_per_txn_1c"]
    lines += [
        "",
        f"Added µs per transaction at 1 client, (1/tps − 1/tps_direct)·1e6: "
        f"gateway **{_fmt(added['gateway'])}**, pgbouncer {_fmt(added['pgbouncer'])}.",
    ]
    rec = summary.get("recording") or {}
    if rec.get("statements"):
        lines += [
            "",
            f"Recording (gateway instance): {rec['statements']:,} statements in {rec['files']} session files, "
            f"{rec['bytes']:,} bytes: **{rec['bytes'] / rec['statements']:.0f} bytes per statement** "
            "(command, decision and result summary).",
        ]
    costs = summary.get("policy_check_us") or {}
    if costs:
        lines += [
            "",
            "Policy check, in-process, `SessionPolicy.check_sql` of the pgbench statement with the 3 deny rules "
            f"(best of runs): cached (same text) **{costs['cached_us']:.2f} µs**, same shape with a new constant "
            f"{costs['shape_us']:.2f} µs, uncached (a statement never seen) **{costs['uncached_us']:.1f} µs**.",
        ]
    if errors:
        lines += ["", "## Not measured", ""]
        for name, msg in errors.items():
            first, *rest = msg.splitlines() or [""]
            lines.append(f"- **{name}**: {first}")
            if rest:
                lines += ["", "  ```", *[f"  {line}" for line in rest[-20:]], "  ```"]
    return "\n".join(lines) + "\n"


def _git_describe() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true",
                    help="CI mode: 1 round, 2 s per pgbench run, scale 2; SSH: fewer runs, a 16 MiB scp file; "
                         "HTTP: 1 round of 3 s wrk runs")
    ap.add_argument("--rounds", type=int, help="rounds (default 3, short 1)")
    ap.add_argument("--seconds", type=int, help="seconds per pgbench run (default 10, short 2)")
    ap.add_argument("--scale", type=int, help="pgbench scale factor (default 10, short 2; at least 2)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory (default benchmarks/results)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (1 if args.short else 3)
    seconds = args.seconds or (2 if args.short else 10)
    scale = max(2, args.scale or (2 if args.short else 10))  # the large result needs 200k accounts
    large_reps = 2  # large-result reads per system per round

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t_start = time.monotonic()
    started = dt.datetime.now(dt.timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="wiregate-bench-"))
    tmp.chmod(0o711)
    pg: ThrowawayPostgres | None = None
    bouncer: subprocess.Popen | None = None
    gateways: list[subprocess.Popen] = []
    check_costs: dict[str, float] = {}
    recording_stats: dict[str, int] = {}
    errors: dict[str, str] = {}
    samples: dict[str, dict[str, list[dict[str, float]]]] = {k: {s: [] for s in SYSTEMS} for k, _t, _k in SCENARIOS}

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        say("starting PostgreSQL")
        pg = ThrowawayPostgres(auth="scram-sha-256", ssl=False, base_dir=tmp).start()
        password = "bench-" + os.urandom(9).hex()
        pg.create_role(BENCH_USER, password)
        pg.create_database(BENCH_DB, owner=BENCH_USER)
        pgbench, psql = _tool(pg, "pgbench"), _tool(pg, "psql")
        pg_version = pg.psql("SHOW server_version").strip()

        direct = Endpoint("direct", pg.port, BENCH_USER, password, BENCH_DB)
        say(f"pgbench -i -s {scale}")
        init = subprocess.run([pgbench, "-i", "-q", "-s", str(scale)], env=direct.env(), capture_output=True,
                              text=True, timeout=1800)
        if init.returncode != 0:
            raise WiregateError(f"pgbench -i failed: {init.stderr.strip()}")
        pg.psql("VACUUM ANALYZE", dbname=BENCH_DB)

        endpoints = {"direct": direct}
        bouncer_version = "PgBouncer (not started)"
        say("starting PgBouncer")
        try:
            bouncer, bport, bouncer_version = start_pgbouncer(tmp / "pgbouncer", pg, password)
            endpoints["pgbouncer"] = Endpoint("pgbouncer", bport, BENCH_USER, password, BENCH_DB)
        except (WiregateError, OSError) as e:
            errors["pgbouncer"] = str(e)
            say(f"PgBouncer not measured: {e}")
        for system, rules in GATEWAY_RULES.items():
            say(f"starting wiregate ({system})")
            try:
                proc, gport, token = start_wiregate(tmp / system, pg, password, rules,
                                                    NO_RECORDING if system == "gateway-norec" else None)
                gateways.append(proc)
                endpoints[system] = Endpoint(system, gport, GW_USER, token, GW_TARGET)
                if rules:
                    check_policy_is_on(_tool(pg, "psql"), endpoints[system])
                if system == "gateway-masked":
                    check_masking_is_on(psql, endpoints[system])
            except (WiregateError, OSError) as e:
                endpoints.pop(system, None)
                errors[system] = f"wiregate serve: {e}"
                say(f"{system} not measured: {e}")
        say("policy check cost (in-process)")
        check_costs = policy_check_costs(rounds=3 if args.short else 5)

        large_bytes, large_rows = large_result_bytes(psql, direct)

        def measure(system: str, fn: Any, bucket: list[dict[str, float]]) -> None:
            ep = endpoints.get(system)
            if ep is None:
                return
            try:
                bucket.append(fn(ep))
            except (WiregateError, subprocess.SubprocessError) as e:
                errors[system] = str(e)
                endpoints.pop(system, None)
                say(f"{system}: {e}")

        say("warm-up")
        for system in SYSTEMS:
            measure(system, lambda ep: run_pgbench(pgbench, ep, 2, 1, 1), [])
        for r in range(rounds):
            for key, title, kind in SCENARIOS:
                for system in SYSTEMS:
                    if system not in endpoints:
                        continue
                    say(f"round {r + 1}/{rounds}: {title}: {system}")
                    bucket = samples[key][system]
                    if key == "select_1c":
                        measure(system, lambda ep: run_pgbench(pgbench, ep, 1, 1, seconds), bucket)
                    elif key == "select_8c":
                        measure(system, lambda ep: run_pgbench(pgbench, ep, 8, 2, seconds), bucket)
                    else:
                        for _ in range(large_reps):
                            measure(system, lambda ep: run_large(psql, ep, large_bytes), bucket)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc in gateways:
            stop_process(proc)
        try:
            recording_stats = recorded_statements(tmp / "gateway" / "state")
        except Exception as e:  # a broken recording must not lose the other figures
            errors["recording"] = f"cannot read the recordings: {type(e).__name__}: {e}"
        _stop_group(bouncer)
        if pg is not None:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, on_term)
    try:
        ssh_report: SshReport = run_ssh_benchmark(short=args.short, say=say)
        http_report: HttpReport = run_http_benchmark(short=args.short, say=say)
        approvals_report: ApprovalsReport = run_approvals_benchmark(short=args.short, say=say)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    summary = summarize(samples)
    summary["policy_check_us"] = check_costs
    summary["recording"] = recording_stats
    meta = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "mode": "short" if args.short else "full",
        "rounds": rounds, "seconds": seconds, "scale": scale, "large_reps_per_round": large_reps,
        "host": f"{platform.node()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
                f"Python {platform.python_version()}",
        "postgres": pg_version, "pgbouncer": bouncer_version, "wiregate": _git_describe(),
        "large_bytes": large_bytes, "large_rows": large_rows,
        "duration_s": round(time.monotonic() - t_start, 1),
    }
    md = (render_markdown(meta, summary, errors) + "\n" + "\n".join(render_ssh_markdown(ssh_report)) + "\n\n"
          + "\n".join(render_http_markdown(http_report)) + "\n\n"
          + "\n".join(render_approvals_markdown(approvals_report)) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    data = {"meta": meta, "summary": summary, "samples": samples, "errors": errors, "ssh": ssh_report.to_json(),
            "http": http_report.to_json(), "approvals": approvals_report.to_json()}
    for name in (f"{stamp}.json", "latest.json"):
        (args.out / name).write_text(json.dumps(data, indent=2) + "\n")
    for name in (f"{stamp}.md", "latest.md"):
        (args.out / name).write_text(md)
    print(md)
    say(f"done; wrote {args.out / (stamp + '.md')} and .json")
    return 1 if errors or ssh_report.errors or http_report.errors or approvals_report.errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except WiregateError as e:
        print(f"benchmark: {e}", file=sys.stderr)
        sys.exit(1)
