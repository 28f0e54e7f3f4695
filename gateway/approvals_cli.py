"""`wiregate approvals list | approve | deny`: the approver's side of just-in-time approvals.

A thin client of the admin API (gateway/admin.py) of any gateway instance: ``WIREGATE_URL``
(default http://127.0.0.1:8081) says where, ``WIREGATE_TOKEN`` who is asking. Standard library
only (urllib), so that it runs wherever the gateway is installed without more dependencies.

Every failure is one line on stderr and exit status 1 (``gateway.cli`` prints the
``WiregateError``): the API's own ``{"error": ...}`` text when it answered, or which URL could not
be reached. Redirects are not followed: the token must not travel to another address.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

from gateway.errors import WiregateError
from gateway.identity import format_duration, parse_duration
from recorder.replay import visible

__all__ = ["DEFAULT_URL", "add_subcommand", "run"]

DEFAULT_URL = "http://127.0.0.1:8081"
TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 16 << 20
COMMAND_WIDTH = 60


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None  # urllib then raises the 3xx as an HTTPError


class _Client:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self._opener = urllib.request.build_opener(_NoRedirect)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json", "User-Agent": "wiregate-cli",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        try:
            with self._opener.open(request, timeout=TIMEOUT_S) as resp:
                raw = resp.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise WiregateError(_http_error(e)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise WiregateError(f"cannot reach the admin API at {self.url} ({reason}): "
                                "is the gateway running with listen.admin, and is WIREGATE_URL right?") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise WiregateError(f"the admin API at {self.url} sent more than {MAX_RESPONSE_BYTES} bytes")
        try:
            return json.loads(raw)
        except ValueError:
            raise WiregateError(f"the admin API at {self.url} did not answer with JSON: is WIREGATE_URL "
                                "the gateway's listen.admin address?") from None


def _http_error(e: urllib.error.HTTPError) -> str:
    try:
        with e:
            doc = json.loads(e.read(65536))
        message = doc.get("error") if isinstance(doc, dict) else None
    except (ValueError, OSError):
        message = None
    if isinstance(message, str) and message:
        return visible(message)
    return f"the admin API answered HTTP {e.code} {visible(str(e.reason or ''))}".rstrip()


def _client() -> _Client:
    url = (os.environ.get("WIREGATE_URL") or DEFAULT_URL).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise WiregateError(f"WIREGATE_URL={url!r} is not an http(s) URL like {DEFAULT_URL}")
    token = (os.environ.get("WIREGATE_TOKEN") or "").strip()
    if not token:
        raise WiregateError("WIREGATE_TOKEN is not set: export a token of an approver or admin "
                            "(an OIDC token, or `wiregate token issue` for dev tokens)")
    return _Client(url, token)


# ---- output ---------------------------------------------------------------------------------

def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _one_line(text: str, width: int) -> str:
    flat = visible(" ".join(text.split()))
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def _cell(value: Any) -> str:
    return visible(str(value if value is not None else "-"))


def print_table(records: list[dict[str, Any]], *, with_status: bool, now: float, out: TextIO) -> None:
    """One row per request, columns padded; every value shown with control characters escaped."""
    columns = ["ID", "AGE", "REQUESTER", "TARGET", "RULE"] + (["STATUS"] if with_status else []) + ["COMMAND"]
    rows = []
    for r in records:
        row = [_cell(r.get("id")), _age(now - float(r.get("created") or now)), _cell(r.get("requester")),
               _cell(r.get("target")), _cell(r.get("rule"))]
        if with_status:
            row.append(_cell(r.get("status")))
        row.append(_one_line(str(r.get("command") or ""), COMMAND_WIDTH))
        rows.append(row)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        # the last column is not padded: no trailing blanks
        print("  ".join(v.ljust(w) for v, w in zip(row[:-1], widths)) + "  " + row[-1], file=out)


# ---- subcommands ----------------------------------------------------------------------------

def _cmd_list(args: argparse.Namespace) -> int:
    client = _client()
    doc = client.call("GET", "/api/approvals?status=" + ("all" if args.all else "pending"))
    records = doc.get("approvals") if isinstance(doc, dict) else None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise WiregateError(f"the admin API at {client.url} answered without an approvals list")
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    if not records:
        print("no approval requests" if args.all else "no pending approval requests")
        return 0
    print_table(records, with_status=args.all, now=time.time(), out=sys.stdout)
    return 0


def _record(doc: Any, client: _Client) -> dict[str, Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise WiregateError(f"the admin API at {client.url} answered without an approval request")
    return doc


def _cmd_approve(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.for_ is not None:
        try:
            parse_duration(args.for_)  # a typo is reported before anything is sent
        except WiregateError as e:
            raise WiregateError(f"--for: {e}") from None
        body["for"] = args.for_
    client = _client()
    record = _record(client.call("POST", f"/api/approvals/{quote(args.id, safe='')}/approve", body), client)
    line = f"approved {visible(record['id'])}"
    until, decided = record.get("grant_until"), record.get("decided_at")
    if isinstance(until, (int, float)) and isinstance(decided, (int, float)):
        line += f" for {format_duration(max(0, round(until - decided)))}"
    print(line)
    return 0


def _cmd_deny(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {} if args.reason is None else {"reason": args.reason}
    client = _client()
    record = _record(client.call("POST", f"/api/approvals/{quote(args.id, safe='')}/deny", body), client)
    reason = record.get("reason")
    print(f"denied {visible(record['id'])}" + (f": {_one_line(reason, 200)}" if isinstance(reason, str) and reason else ""))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``approvals`` subcommand."""
    return args.approvals_func(args)


def add_subcommand(subparsers: Any) -> None:
    """Register ``approvals list|approve|deny`` on the ``wiregate`` parser's subparsers."""
    env = f"admin API at $WIREGATE_URL (default {DEFAULT_URL}) with the token in $WIREGATE_TOKEN"
    p = subparsers.add_parser("approvals", help="list, approve and deny held commands",
                              description=f"Decide just-in-time approval requests through the {env}.")
    asub = p.add_subparsers(dest="approvals_command", required=True, metavar="SUBCOMMAND")

    pl = asub.add_parser("list", help="requests waiting for a decision")
    pl.add_argument("--all", action="store_true", help="every request, also decided and expired ones")
    pl.add_argument("--json", action="store_true", help="print the requests as JSON")
    pl.set_defaults(approvals_func=_cmd_list)

    pa = asub.add_parser("approve", help="let a held command run")
    pa.add_argument("id", help="the request id (ap-...), or a unique prefix of it")
    pa.add_argument("--for", dest="for_", metavar="DURATION",
                    help="also let the same identity run the same statement on that target for this long, e.g. 30m")
    pa.set_defaults(approvals_func=_cmd_approve)

    pd = asub.add_parser("deny", help="refuse a held command")
    pd.add_argument("id", help="the request id (ap-...), or a unique prefix of it")
    pd.add_argument("--reason", help="told to the requester")
    pd.set_defaults(approvals_func=_cmd_deny)

    p.set_defaults(func=run)
