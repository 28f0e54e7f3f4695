"""HTTP benchmark: a small JSON upstream reached directly vs through wiregate, in one run.

    python -m benchmarks.http [--short]   # alone: prints the markdown section, writes no files
    python -m benchmarks.run [--short]    # part of the whole benchmark (benchmarks/results/)

Everything runs on loopback. The upstream is a tiny keep-alive HTTP/1.1 responder on uvloop
(``python -m benchmarks.http --upstream PORT``, its own process): it answers ``GET /small``
and ``GET /email`` with fixed JSON bodies, pipelined requests included, and does nothing
else, so that it is much faster than the gateway and the figures measure the gateway. (A
Python responder rather than nginx: no further Debian package, and the same one on every
machine; at about ten times the gateway's request rate it is not what limits the gateway.)

Two ``wiregate serve`` processes sit in front of it, each with ``listen.http`` and one http
target (the upstream), recording on (the default):

* ``gateway``: one deny http rule, so every request goes through the policy check;
* ``gateway-masked``: the same plus a mask rule (detectors ``email``, keys ``email``), so the
  gateway reads every JSON response whole and masks it before answering.

Measurements, interleaved (direct, gateway, gateway-masked, direct, ...) so that the noise of a
small machine hits all systems alike; medians are reported, nothing is asserted about timings:

* ``wrk -t1 -c16 -d5s --latency`` (Debian's wrk, when installed) on ``/small`` and on
  ``/email`` (a body with an e-mail address in a key the rule names and in free text):
  requests per second, p50 and p99 latency, median over rounds; and the CPU time the serving
  process (the gateway, its recorder thread included; direct: the responder) spent per request,
  from /proc, which a busy machine disturbs less than the rate;
* one connection, one request after another, timed from Python (httpx): p50 and p99 of
  each request's latency. This runs without wrk too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from benchmarks.report import fmt, percentile, ratio, run_standalone, signals_held, why
from gateway.demo import render_config, start_gateway, stop_process, wait_listening
from gateway.errors import WiregateError
from gateway.pgserver import free_port

__all__ = ["FULL", "SHORT", "HTTP_SYSTEMS", "HttpReport", "Profile", "parse_wrk", "render_http_markdown",
           "run_http_benchmark", "serve_upstream"]

HTTP_SYSTEMS = ("direct", "gateway", "gateway-masked")
GATEWAYS = ("gateway", "gateway-masked")
HOST = "127.0.0.1"
TARGET = "bench"
GROUP = "bench"
CALLER = "bencher"
DENY_RULES = [{"name": "no-admin-deletes", "action": "deny",
               "match": {"http": {"method": ["DELETE"], "path": ["/admin/*"]}}}]
MASK_RULES = [{"name": "mask-email", "action": "mask", "detectors": ["email"], "keys": ["email"]}]
GATEWAY_RULES = {"gateway": DENY_RULES, "gateway-masked": DENY_RULES + MASK_RULES}
SECRET_EMAIL = "ada.lovelace@example.com"
SMALL_BODY = b'{"id":42,"name":"widget","ok":true,"tags":["a","b"],"price":9.5}'
EMAIL_BODY = (b'{"id":42,"name":"Ada Lovelace","email":"' + SECRET_EMAIL.encode()
              + b'","note":"write to ' + SECRET_EMAIL.encode() + b' for access","active":true}')
BODIES = {"/small": SMALL_BODY, "/email": EMAIL_BODY}
WRK_THREADS = 1
WRK_CONNECTIONS = 16
OP_TIMEOUT = 30.0
EXPECTED = (WiregateError, OSError, httpx.HTTPError, subprocess.SubprocessError)


@dataclass(frozen=True, slots=True)
class Profile:
    """How much of each measurement one run takes."""

    wrk_seconds: int
    wrk_rounds: int
    warmup_seconds: int
    sequential: int  # requests per system and body on one connection


FULL = Profile(wrk_seconds=5, wrk_rounds=3, warmup_seconds=2, sequential=500)
SHORT = Profile(wrk_seconds=3, wrk_rounds=1, warmup_seconds=1, sequential=500)

# key, title, path; wrk scenarios give rps/p50/p99 per run, sequential ones a latency per request
WRK_SCENARIOS: tuple[tuple[str, str, str], ...] = (
    ("wrk_small", f"wrk, {len(SMALL_BODY)} B JSON", "/small"),
    ("wrk_email", f"wrk, {len(EMAIL_BODY)} B JSON with an e-mail address", "/email"),
)
SEQ_SCENARIOS: tuple[tuple[str, str, str], ...] = (
    ("seq_small", f"1 connection, sequential (httpx), {len(SMALL_BODY)} B JSON", "/small"),
    ("seq_email", f"1 connection, sequential (httpx), {len(EMAIL_BODY)} B JSON with an e-mail address", "/email"),
)


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    """How a client reaches one system: base URL (with the /TARGET prefix through the gateway) and token."""

    name: str
    base_url: str
    token: str
    pid: int  # the serving process, whose CPU time per request is measured

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def url(self, path: str) -> str:
        return self.base_url + path


@dataclass(slots=True)
class HttpReport:
    """What one HTTP run measured: samples per scenario and system, their summary, and what failed."""

    meta: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, dict[str, list[Any]]] = field(
        default_factory=lambda: {k: {s: [] for s in HTTP_SYSTEMS} for k, _t, _p in WRK_SCENARIOS + SEQ_SCENARIOS})
    summary: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "summary": self.summary, "samples": self.samples, "errors": self.errors}



# --------------------------------------------------------------------------- the upstream


def _response(status: str, body: bytes, close: bool) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode() + body


# every answer the upstream can give, built once
_ANSWERS = {(path, close): _response("200 OK", body, close) for path, body in BODIES.items() for close in (False, True)}
_NOT_FOUND = _response("404 Not Found", b'{"error":"not found"}', True)
_BAD = _response("400 Bad Request", b'{"error":"this responder takes GET requests without a body"}', True)
_TOO_LARGE = _response("431 Request Header Fields Too Large", b'{"error":"head too large"}', True)
_MAX_HEAD = 64 * 1024
# a request with a body (any Content-Length but zero, any Transfer-Encoding)
_BODY_HEADER = re.compile(rb"\r\n(?:content-length:(?![ \t]*0+[ \t]*\r\n)|transfer-encoding:)", re.I)
_CLOSE_HEADER = re.compile(rb"\r\nconnection:[^\r\n]*\bclose\b", re.I)
_KEEP_HEADER = re.compile(rb"\r\nconnection:[^\r\n]*\bkeep-alive\b", re.I)


class _Responder(asyncio.Protocol):
    """One connection to the upstream: every complete request head gets its fixed answer at once.

    Requests with a body are refused with 400 and the connection closed (fail closed: this
    responder only ever expects the benchmark's GETs, and could not find the next request)."""

    __slots__ = ("transport", "buffer")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buffer + data if self.buffer else data
        out: list[bytes] = []
        start = 0
        close = False
        while True:
            end = buf.find(b"\r\n\r\n", start)
            if end < 0:
                break
            answer, close = _answer(buf[start:end + 2])
            out.append(answer)
            start = end + 4
            if close:
                break
        self.buffer = b"" if close else buf[start:]
        if len(self.buffer) > _MAX_HEAD:
            out.append(_TOO_LARGE)
            close = True
        if out:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            self.transport.close()


def _answer(head: bytes) -> tuple[bytes, bool]:
    """The answer to one request head (request line and headers, ending in CRLF); and whether to close."""
    line_end = head.find(b"\r\n")
    parts = head[:line_end].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or _BODY_HEADER.search(head):
        return _BAD, True
    version = parts[2]
    close = bool(_CLOSE_HEADER.search(head)) if version == b"HTTP/1.1" else not _KEEP_HEADER.search(head)
    answer = _ANSWERS.get((parts[1].decode("latin-1"), close))
    return (answer, close) if answer is not None else (_NOT_FOUND, True)


def serve_upstream(port: int) -> None:
    """Serve the fixed JSON answers on HOST:port until SIGTERM (uvloop, one process)."""
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Responder, HOST, port, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with server:
            await stop.wait()

    uvloop.run(main())


def start_upstream(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    log_path = workdir / "upstream.log"
    root = Path(__file__).resolve().parent.parent
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.http", "--upstream", str(port)], cwd=root,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_listening(proc, HOST, port, log_path, timeout=15)
    except WiregateError as e:
        stop_process(proc)
        raise WiregateError(f"the upstream responder: {e}") from None
    return proc, port


# --------------------------------------------------------------------------- the gateways


def start_http_gateway(workdir: Path, upstream_port: int, rules: list[dict]) -> tuple[subprocess.Popen, HttpEndpoint]:
    """``wiregate serve`` with listen.http and one http target in front of the upstream; mints a dev token."""
    workdir.mkdir()
    port = free_port()
    config_path = workdir / "wiregate.toml"
    config_path.write_text(render_config(
        {"gateway": {"state_dir": str(workdir / "state")}, "listen": {"http": f"{HOST}:{port}"},
         "identity": {"dev_tokens": True}, "policy": {"default": "allow"}},
        {"targets": [{"name": TARGET, "protocol": "http", "url": f"http://{HOST}:{upstream_port}",
                      "allow_groups": [GROUP]}],
         "rules": rules},
        header="generated by `python -m benchmarks.http`",
    ))
    from gateway.config import load_config
    from gateway.identity import issue_dev_token

    token = issue_dev_token(load_config(config_path), sub=CALLER, groups=[GROUP], ttl_seconds=4 * 3600)
    log_path = workdir / "gateway.log"
    proc = start_gateway(config_path, log_path)
    try:
        wait_listening(proc, HOST, port, log_path, timeout=20)
    except WiregateError:
        stop_process(proc)
        raise
    return proc, HttpEndpoint(workdir.name, f"http://{HOST}:{port}/{TARGET}", token, proc.pid)


def _client(ep: HttpEndpoint) -> httpx.Client:
    # trust_env=False: a proxy from the environment would be measured too
    return httpx.Client(headers=ep.headers, timeout=OP_TIMEOUT, trust_env=False)


def check_answers(ep: HttpEndpoint, masked: bool) -> None:
    """The system answers both paths as the upstream would, the masked gateway with the address masked."""
    with _client(ep) as c:
        for path, body in BODIES.items():
            r = c.get(ep.url(path))
            if r.status_code != 200:
                raise WiregateError(f"GET {path}: status {r.status_code}: {r.text[:200]!r}")
            if masked and path == "/email":
                got = r.json()
                if SECRET_EMAIL in r.text or got.get("name") != "Ada Lovelace":
                    raise WiregateError(f"the masked gateway did not mask {path}: {r.text[:200]!r}")
            elif r.json() != json.loads(body):
                raise WiregateError(f"GET {path}: the body differs from the upstream's: {r.text[:200]!r}")


def check_policy_is_on(ep: HttpEndpoint) -> None:
    """A denied request must get the gateway's 403 naming the rule, or the comparison would be unfair."""
    with _client(ep) as c:
        r = c.delete(ep.url("/admin/x"))
    if r.status_code != 403 or r.json().get("rule") != DENY_RULES[0]["name"]:
        raise WiregateError(f"the gateway did not refuse DELETE /admin/x (status {r.status_code}: "
                            f"{r.text[:200]!r}); the policy check is not active")


# --------------------------------------------------------------------------- wrk

_WRK_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_WRK_PCT = re.compile(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.M)
_WRK_TOTAL = re.compile(r"^\s+(\d+) requests in ", re.M)
_WRK_NON2XX = re.compile(r"^\s+Non-2xx or 3xx responses: (\d+)", re.M)
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(output: str) -> dict[str, float]:
    """rps, p50_ms, p99_ms and requests from ``wrk --latency`` output; a run with non-2xx answers,
    socket errors or missing figures raises (its rate would not be the rate of proxied requests)."""
    rps, total = _WRK_RPS.search(output), _WRK_TOTAL.search(output)
    pct = {m.group(1): float(m.group(2)) * _UNIT_MS[m.group(3)] for m in _WRK_PCT.finditer(output)}
    if not rps or not total or set(pct) != {"50", "99"}:
        raise WiregateError(f"cannot read wrk's output: {output.strip()[-300:]!r}")
    bad = _WRK_NON2XX.search(output)
    if bad and int(bad.group(1)):
        raise WiregateError(f"wrk got {bad.group(1)} non-2xx/3xx answers")
    sock = _WRK_SOCKET.search(output)
    if sock and any(int(n) for n in sock.groups()):
        raise WiregateError(f"wrk: {sock.group(0)}")
    return {"rps": float(rps.group(1)), "p50_ms": pct["50"], "p99_ms": pct["99"], "requests": float(total.group(1))}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (all its threads); None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_wrk(wrk: str, ep: HttpEndpoint, path: str, seconds: int) -> dict[str, float]:
    """One wrk run: parse_wrk's figures plus ``cpu_us``, the serving process's CPU µs per request."""
    cmd = [wrk, f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency",
           "-H", f"Authorization: Bearer {ep.token}", ep.url(path)]
    cpu0 = cpu_seconds(ep.pid)
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=seconds + 60)
    cpu1 = cpu_seconds(ep.pid)
    if p.returncode != 0:
        raise WiregateError(f"wrk exit {p.returncode}: {(p.stderr or p.stdout).strip()[:300]}")
    out = parse_wrk(p.stdout)
    if cpu0 is not None and cpu1 is not None:
        out["cpu_us"] = (cpu1 - cpu0) / out["requests"] * 1e6
    return out


def _wrk_version(wrk: str) -> str:
    p = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    first = (p.stdout or p.stderr).strip().splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk (unknown version)"


# --------------------------------------------------------------------------- sequential, from Python


def measure_sequential(endpoints: dict[str, HttpEndpoint], path: str, runs: int, bucket: dict[str, list[float]],
                       errors: dict[str, str]) -> None:
    """``runs`` GETs per system on one kept-alive connection each, interleaved; ms per request."""
    clients = {name: _client(ep) for name, ep in endpoints.items()}
    try:
        for _ in range(runs):
            for name, client in clients.items():
                if name in errors:
                    continue
                url = endpoints[name].url(path)
                try:
                    t0 = time.perf_counter()
                    r = client.get(url)
                    elapsed = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise WiregateError(f"GET {path}: status {r.status_code}")
                except EXPECTED as e:
                    errors[name] = f"sequential GET {path}: {why(e)}"
                    continue
                bucket[name].append(elapsed * 1e3)
    finally:
        for client in clients.values():
            client.close()


# --------------------------------------------------------------------------- summary and report




def summarize(report: HttpReport) -> dict[str, Any]:
    """Per scenario and metric: each system's median and the ratios of each gateway to direct."""
    out: dict[str, Any] = {}
    for key, _title, _path in WRK_SCENARIOS:
        out[key] = {}
        for metric in ("rps", "p50_ms", "p99_ms", "cpu_us"):
            row: dict[str, float | None] = {}
            for s in HTTP_SYSTEMS:
                vals = [run[metric] for run in report.samples[key][s] if metric in run]
                row[s] = statistics.median(vals) if vals else None
            out[key][metric] = row
        out[key]["n"] = {s: len(report.samples[key][s]) for s in HTTP_SYSTEMS}
    for key, _title, _path in SEQ_SCENARIOS:
        out[key] = {"p50_ms": {s: percentile(report.samples[key][s], 50) for s in HTTP_SYSTEMS},
                    "p99_ms": {s: percentile(report.samples[key][s], 99) for s in HTTP_SYSTEMS},
                    "n": {s: len(report.samples[key][s]) for s in HTTP_SYSTEMS}}
    for key, _title, _path in WRK_SCENARIOS + SEQ_SCENARIOS:
        for metric, row in out[key].items():
            if metric != "n":
                for g in GATEWAYS:
                    row[f"{g}/direct"] = ratio(row[g], row["direct"])
    out["added_ms"] = {k: {g: (out[k]["p50_ms"][g] - out[k]["p50_ms"]["direct"])
                           if out[k]["p50_ms"][g] is not None and out[k]["p50_ms"]["direct"] is not None else None
                           for g in GATEWAYS} for k, _t, _p in SEQ_SCENARIOS}
    return out


def _vs_direct(metric: str, ratio: float | None) -> str:
    if metric == "cpu_us":
        return ""  # the responder does next to nothing per request: a ratio to it says nothing
    if ratio is None:
        return "n/a"
    if metric == "rps":
        return f"{ratio * 100:.0f}% of direct"
    return f"{ratio:.2f}x direct"


def render_http_markdown(report: HttpReport) -> list[str]:
    """The HTTP section of the benchmark's markdown report, as lines."""
    meta, summary = report.meta, report.summary
    prof = meta.get("profile") or {}
    wrk = meta.get("wrk")
    lines = [
        "## HTTP",
        "",
        f"Mode **{meta.get('mode', '?')}**, interleaved runs (direct, gateway, gw masked, ...): "
        + (f"`{wrk} -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{prof.get('wrk_seconds')}s --latency` x "
           f"{prof.get('wrk_rounds')} round(s), median of the runs; " if wrk else "")
        + f"{prof.get('sequential')} sequential GETs per system on one kept-alive connection (httpx), "
        "p50/p99 of the requests.",
        "",
        "- **direct**: a keep-alive HTTP/1.1 responder on uvloop (`benchmarks/http.py`, its own process) "
        "answering fixed JSON bodies; **gateway**: `wiregate serve` with `listen.http`, one http target "
        "(that responder), 1 deny http rule (`DELETE /admin/*`), recording every request; **gw masked**: the "
        "same plus a mask rule (detectors `email`, keys `email`), so it reads and masks every JSON answer",
        "- the e-mail body holds the address under the key `email` and in free text; through gw masked both "
        "are masked (checked before measuring)",
    ]
    if wrk:
        lines += [
            "- ratios: requests/s rows give each gateway's rate as a % of direct; latency rows give gateway "
            "latency / direct latency",
            "- CPU µs/request: user + system CPU time of the serving process during the wrk run (/proc), per "
            "request; the gateway's includes its recorder thread, direct's is the responder's. Other load on the "
            "machine lowers requests/s more than it changes this",
        ]
    else:
        lines.append("- ratios: gateway latency / direct latency")
        lines.append("- **wrk not installed** (Debian package `wrk`; `make sysdeps-bench` installs it): "
                     "only the sequential figures were measured")
    lines += [
        "",
        "| scenario | metric | direct | gateway | gw masked | gateway vs direct | gw masked vs direct |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    if report.errors:
        status = ["not measured¹" if s in report.errors else "ok" for s in HTTP_SYSTEMS]
        lines.append("| status | | " + " | ".join(status) + " | | |")
    labels = {"rps": "requests/s", "p50_ms": "p50 ms", "p99_ms": "p99 ms", "cpu_us": "CPU µs/request"}
    scenarios = (WRK_SCENARIOS if wrk else ()) + SEQ_SCENARIOS
    for key, title, _path in scenarios:
        for metric, row in summary.get(key, {}).items():
            if metric == "n" or (metric == "cpu_us" and all(row[s] is None for s in HTTP_SYSTEMS)):
                continue
            cells = [fmt(row[s], decimals=1 if metric == "cpu_us" else 3) for s in HTTP_SYSTEMS]
            lines.append(f"| {title} | {labels[metric]} | " + " | ".join(cells) + " | "
                         + " | ".join(_vs_direct(metric, row[f"{g}/direct"]) for g in GATEWAYS) + " |")
    added = summary.get("added_ms") or {}
    if added:
        lines += [
            "",
            "Added ms per request, one connection (p50 gateway − p50 direct): small JSON **"
            f"{fmt(added['seq_small']['gateway'], decimals=3)}** "
            f"(masked {fmt(added['seq_small']['gateway-masked'], decimals=3)}), e-mail JSON "
            f"{fmt(added['seq_email']['gateway'], decimals=3)} "
            f"(masked **{fmt(added['seq_email']['gateway-masked'], decimals=3)}**).",
        ]
    rec = summary.get("recording") or {}
    if rec.get("files"):
        per = f", about **{rec['bytes'] / rec['requests']:.0f} bytes per request**" if rec.get("requests") else ""
        lines += ["", f"Recording (gateway instance): {rec['requests']:,} requests in {rec['files']:,} session "
                      f"files, {rec['bytes']:,} bytes{per} (request line, decision, exchange summary)."]
    if report.errors:
        lines += ["", "¹ Not measured (HTTP):", ""]
        for name, msg in report.errors.items():
            first, *rest = msg.splitlines() or [""]
            lines.append(f"- **{name}**: {first}")
            if rest:
                lines += ["", "  ```", *[f"  {line}" for line in rest[-20:]], "  ```"]
    return lines


# --------------------------------------------------------------------------- the run


def _recording_size(state_dir: Path) -> dict[str, int]:
    files = sorted((state_dir / "recordings").rglob("*.wgrec")) if state_dir.exists() else []
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def run_http_benchmark(*, short: bool, say: Callable[[str], None], base_dir: Path | None = None) -> HttpReport:
    """Start the upstream and the two gateways, measure, stop them all; a system that fails gets its reason.

    Nothing starting at all is reported as an error of every system rather than raised, so
    the figures of the rest of the run are kept."""
    prof = SHORT if short else FULL
    report = HttpReport()
    wrk = shutil.which("wrk")
    report.meta.update(mode="short" if short else "full", profile={
        "wrk_seconds": prof.wrk_seconds, "wrk_rounds": prof.wrk_rounds, "warmup_seconds": prof.warmup_seconds,
        "sequential": prof.sequential, "wrk_threads": WRK_THREADS, "wrk_connections": WRK_CONNECTIONS},
        wrk=_wrk_version(wrk) if wrk else None, httpx=httpx.__version__)
    errors = report.errors
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wiregate-bench-http-", dir=base_dir))
    workdir.chmod(0o711)
    procs: list[subprocess.Popen] = []
    recording: dict[str, int] = {}
    # requests the recording gateway served (checks left out: a handful), for bytes per request
    served = 0
    try:
        say("http: starting the upstream responder")
        upstream, up_port = start_upstream(workdir)
        procs.append(upstream)
        endpoints = {"direct": HttpEndpoint("direct", f"http://{HOST}:{up_port}", "unused", upstream.pid)}
        for system in GATEWAYS:
            say(f"http: starting wiregate ({system})")
            try:
                proc, ep = start_http_gateway(workdir / system, up_port, GATEWAY_RULES[system])
                procs.append(proc)
                endpoints[system] = ep
                check_policy_is_on(ep)
            except EXPECTED as e:
                endpoints.pop(system, None)
                errors[system] = f"wiregate serve: {why(e)}"
                say(f"http: {system} not measured: {why(e)}")
        for name, ep in list(endpoints.items()):
            try:
                check_answers(ep, masked=name == "gateway-masked")
            except EXPECTED as e:
                errors[name] = f"check: {why(e)}"
                say(f"http: {name} not measured: {why(e)}")

        def live() -> dict[str, HttpEndpoint]:
            return {n: ep for n, ep in endpoints.items() if n not in errors}

        if wrk:
            say("http: wrk warm-up")
            for name, ep in live().items():
                try:
                    served += int(run_wrk(wrk, ep, "/small", prof.warmup_seconds)["requests"]) * (name == "gateway")
                except EXPECTED as e:
                    errors[name] = f"wrk warm-up: {why(e)}"
            for r in range(prof.wrk_rounds):
                for key, _title, path in WRK_SCENARIOS:
                    for name, ep in live().items():
                        say(f"http: round {r + 1}/{prof.wrk_rounds}: wrk {path}: {name}")
                        try:
                            run = run_wrk(wrk, ep, path, prof.wrk_seconds)
                            report.samples[key][name].append(run)
                            served += int(run["requests"]) * (name == "gateway")
                        except EXPECTED as e:
                            errors[name] = f"wrk {path}: {why(e)}"
                            say(f"http: {name}: wrk {path}: {why(e)}")
        else:
            say("http: wrk not installed; sequential figures only")
        for key, _title, path in SEQ_SCENARIOS:
            say(f"http: {prof.sequential} sequential GET {path} per system")
            measure_sequential(live(), path, prof.sequential, report.samples[key], errors)
            served += len(report.samples[key]["gateway"])
    except EXPECTED as e:
        for system in HTTP_SYSTEMS:
            errors.setdefault(system, why(e))
        say(f"http: not measured: {why(e)}")
    finally:
        with signals_held():
            for proc in reversed(procs):
                stop_process(proc)
            recording = {**_recording_size(workdir / "gateway" / "state"), "requests": served}
            shutil.rmtree(workdir, ignore_errors=True)
    report.summary = summarize(report)
    report.summary["recording"] = recording
    report.meta["duration_s"] = round(time.monotonic() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.http", description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="CI sizes: 1 round of 3 s wrk runs")
    ap.add_argument("--upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.upstream is not None:
        serve_upstream(args.upstream)
        return 0
    return run_standalone(run_http_benchmark, render_http_markdown, short=args.short)


if __name__ == "__main__":
    sys.exit(main())
