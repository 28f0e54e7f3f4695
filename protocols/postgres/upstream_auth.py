"""The gateway's side of authenticating to an upstream PostgreSQL server (sans-IO).

``UpstreamAuth.step(code, payload)`` takes one AuthenticationRequest and returns
the bytes to send back (or None when nothing is to be sent). It speaks
SCRAM-SHA-256 (RFC 5802/7677, without channel binding), MD5 and cleartext.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict

from protocols.postgres import codec

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


class UpstreamAuthError(Exception):
    """The upstream asked for something the gateway cannot or will not do."""


class SaltedPasswordCache:
    """PBKDF2 with thousands of iterations costs milliseconds; the upstream's salt
    for a role is stable, so the derived key is reused across connections."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[tuple[bytes, bytes, int], bytes] = OrderedDict()

    def get(self, password: bytes, salt: bytes, iterations: int) -> bytes:
        key = (hashlib.sha256(password).digest(), salt, iterations)
        hit = self._items.get(key)
        if hit is None:
            hit = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
            self._items[key] = hit
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return hit


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


class UpstreamAuth:
    def __init__(self, user: str, password: str | None, cache: SaltedPasswordCache) -> None:
        self._user = user
        self._password = password
        self._cache = cache
        self._client_nonce = ""
        self._client_first_bare = ""
        self._server_signature = b""
        self.method = "trust"

    def _need_password(self, method: str) -> bytes:
        if self._password is None:
            raise UpstreamAuthError(f"the target asks for {method} authentication but the gateway holds no password for it")
        return self._password.encode()

    def step(self, code: int, payload: bytes) -> bytes | None:
        if code == AUTH_OK:
            if self.method == "scram-sha-256" and not self._server_signature == b"verified":
                raise UpstreamAuthError("the target ended SCRAM authentication without proving it knows the password")
            return None
        if code == AUTH_CLEARTEXT:
            self.method = "password"
            return codec.password_message(self._need_password("password"))
        if code == AUTH_MD5:
            self.method = "md5"
            pw = self._need_password("md5")
            inner = hashlib.md5(pw + self._user.encode()).hexdigest().encode()
            outer = hashlib.md5(inner + payload[:4]).hexdigest()
            return codec.password_message(b"md5" + outer.encode())
        if code == AUTH_SASL:
            mechanisms = [m.decode() for m in payload.split(b"\x00") if m]
            if "SCRAM-SHA-256" not in mechanisms:
                raise UpstreamAuthError(f"the target offers SASL mechanisms {mechanisms}, none of which the gateway speaks")
            self.method = "scram-sha-256"
            self._need_password("SCRAM-SHA-256")
            self._client_nonce = base64.b64encode(secrets.token_bytes(18)).decode()
            # PostgreSQL takes the user from the startup packet; the SCRAM user name is left empty
            self._client_first_bare = f"n=,r={self._client_nonce}"
            return codec.sasl_initial_response("SCRAM-SHA-256", ("n,," + self._client_first_bare).encode())
        if code == AUTH_SASL_CONTINUE:
            return codec.sasl_response(self._scram_final(payload.decode()))
        if code == AUTH_SASL_FINAL:
            attrs = dict(a.split("=", 1) for a in payload.decode().split(",") if "=" in a)
            if "e" in attrs:
                raise UpstreamAuthError(f"SCRAM failed: {attrs['e']}")
            if not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), self._server_signature):
                raise UpstreamAuthError("the target's SCRAM server signature does not match: it does not know the password")
            self._server_signature = b"verified"
            return None
        raise UpstreamAuthError(f"the target asks for authentication method {code}, which the gateway does not support")

    def _scram_final(self, server_first: str) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.split(",") if "=" in a)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), int(attrs.get("i", "0"))
        if not nonce.startswith(self._client_nonce) or not salt or iterations < 1:
            raise UpstreamAuthError("the target sent an invalid SCRAM challenge")
        salted = self._cache.get(self._need_password("SCRAM-SHA-256"), base64.b64decode(salt), iterations)
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
