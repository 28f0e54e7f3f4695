"""A plain HTTP upstream (aiohttp) for the gateway's HTTP end-to-end tests.

    python -m tests.e2e.http_upstream --port P [--host 127.0.0.1]

Every endpoint returns fixed, known content so a test can compare what came
through the gateway byte for byte with what the upstream sent:

    any  /echo/{tail}                 JSON: method, raw path + query, headers (lower-case name ->
                                      list of values), body (first 64 KiB as text), body_len,
                                      body_sha256. The body is read streaming, so multi-GiB
                                      chunked uploads cost no memory.
    GET  /users                       USERS as JSON (emails, card numbers, tokens, a nested SSN)
    GET  /text                        TEXT_BODY, text/plain
    GET  /binary                      BINARY_BODY, application/octet-stream (must pass unmasked)
    GET  /sse?n=5&interval=0.3        n events ``id: k`` / ``data: {"i": k, "email": ...}``, flushed
                                      one every ``interval`` s, then the response ends
    GET  /stream?chunks=N&size=S&interval=T   chunked octet stream of N chunks of S bytes
    GET  /slow?delay=S                answers after S seconds
    GET  /status/{code}               that status, small JSON body (none for 204/304)
    GET  /big?size=N                  a JSON object of about N bytes (rows with emails)
    GET  /redirect                    302 to /echo/after-redirect
    GET  /ws                          WebSocket echo, text and binary

The constants are importable so tests do not repeat the fixture data.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json

from aiohttp import WSMsgType, web

__all__ = [
    "BINARY_BODY",
    "ECHO_BODY_KEEP",
    "TEXT_BODY",
    "USERS",
    "big_body",
    "make_app",
    "main",
    "sse_event",
    "stream_chunk",
]

# the echo keeps only this much of the body as text; length and hash cover all of it
ECHO_BODY_KEEP = 64 * 1024

USERS: list[dict] = [
    {"id": 1, "name": "Alice Example", "email": "alice@example.com", "card": "4111 1111 1111 1111",
     "api_token": "tok_" + "A1b2C3d4E5f6G7h8I9j0K1l2", "age": 34, "profile": {"ssn": "123-45-6789", "city": "Lyon"}},
    {"id": 2, "name": "Bob Example", "email": "bob@example.com", "card": "5555 5555 5555 4444",
     "api_token": "tok_" + "Z9y8X7w6V5u4T3s2R1q0P9o8", "age": 41, "profile": {"ssn": "987-65-4320", "city": "Oslo"}},
]

TEXT_BODY = "Contact alice@example.com about invoice 42; card on file 4111 1111 1111 1111.\n"

# an email inside opaque bytes: a masking gateway must leave binary bodies alone
BINARY_BODY = bytes(range(256)) + b"\x00bob@example.com\x00" + bytes(range(255, -1, -1))

_MAX_COUNT = 100_000
_MAX_SIZE = 1 << 30
_MAX_SECONDS = 600.0


def sse_event(k: int) -> bytes:
    """The k-th event of /sse, exactly as sent."""
    data = json.dumps({"i": k, "email": f"user{k}@example.com"})
    return f"id: {k}\ndata: {data}\n\n".encode()


def stream_chunk(k: int, size: int) -> bytes:
    """The k-th chunk of /stream: a recognisable, position-dependent filler."""
    stamp = f"[chunk {k}]".encode()
    return (stamp * (size // len(stamp) + 1))[:size]


def big_body(size: int) -> bytes:
    """The body of /big?size=N: a JSON object of about ``size`` bytes (rows with emails)."""
    rows: list[str] = []
    total = len('{"rows": []}')
    while total < size:
        row = json.dumps({"i": len(rows), "email": f"user{len(rows)}@example.com", "pad": "x" * 40})
        rows.append(row)
        total += len(row) + 2
    return ('{"rows": [' + ", ".join(rows) + "]}").encode()


def _int_arg(request: web.Request, name: str, default: int, hi: int = _MAX_COUNT) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    if not 0 <= value <= hi:
        raise web.HTTPBadRequest(text=f"{name} out of range 0..{hi}")
    return value


def _float_arg(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from None
    if not 0 <= value <= _MAX_SECONDS:
        raise web.HTTPBadRequest(text=f"{name} out of range 0..{_MAX_SECONDS}")
    return value


async def echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    kept = bytearray()
    total = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        digest.update(chunk)
        total += len(chunk)
        if len(kept) < ECHO_BODY_KEEP:
            kept += chunk[: ECHO_BODY_KEEP - len(kept)]
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    return web.json_response({
        "method": request.method,
        "path": request.raw_path,
        "headers": headers,
        "body": bytes(kept).decode("utf-8", errors="replace"),
        "body_len": total,
        "body_sha256": digest.hexdigest(),
    })


async def users(request: web.Request) -> web.Response:
    return web.json_response(USERS)


async def text(request: web.Request) -> web.Response:
    return web.Response(text=TEXT_BODY, content_type="text/plain", charset="utf-8")


async def binary(request: web.Request) -> web.Response:
    return web.Response(body=BINARY_BODY, content_type="application/octet-stream")


async def sse(request: web.Request) -> web.StreamResponse:
    n = _int_arg(request, "n", 5)
    interval = _float_arg(request, "interval", 0.3)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    for k in range(n):
        if k:
            await asyncio.sleep(interval)
        # write() hands the bytes to the transport and drains: each event leaves now
        await resp.write(sse_event(k))
    await resp.write_eof()
    return resp


async def stream(request: web.Request) -> web.StreamResponse:
    chunks = _int_arg(request, "chunks", 10)
    size = _int_arg(request, "size", 1024, hi=_MAX_SIZE)
    interval = _float_arg(request, "interval", 0.0)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for k in range(chunks):
        if k and interval:
            await asyncio.sleep(interval)
        await resp.write(stream_chunk(k, size))
    await resp.write_eof()
    return resp


async def slow(request: web.Request) -> web.Response:
    delay = _float_arg(request, "delay", 1.0)
    await asyncio.sleep(delay)
    return web.json_response({"delay": delay})


async def status(request: web.Request) -> web.Response:
    try:
        code = int(request.match_info["code"])
    except ValueError:
        raise web.HTTPBadRequest(text="status code must be an integer") from None
    if not 200 <= code <= 599:
        raise web.HTTPBadRequest(text="status code out of range 200..599")
    if code in (204, 304):
        return web.Response(status=code)
    return web.json_response({"status": code}, status=code)


async def big(request: web.Request) -> web.Response:
    size = _int_arg(request, "size", 1 << 20, hi=_MAX_SIZE)
    return web.Response(body=big_body(size), content_type="application/json")


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/echo/after-redirect"})


async def ws(request: web.Request) -> web.WebSocketResponse:
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sock.send_bytes(msg.data)
        elif msg.type == WSMsgType.ERROR:
            break
    return sock


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/users", users)
    app.router.add_get("/text", text)
    app.router.add_get("/binary", binary)
    app.router.add_get("/sse", sse)
    app.router.add_get("/stream", stream)
    app.router.add_get("/slow", slow)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/big", big)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/ws", ws)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port,
                print=lambda msg: print(f"http_upstream listening on http://{args.host}:{args.port}", flush=True),
                access_log=None)


if __name__ == "__main__":
    main()
