"""Who is calling: the one authenticator every protocol uses.

A caller presents a token (the PostgreSQL password, the SSH password, the HTTP
bearer token). Three kinds are accepted:

* OIDC JWTs from a configured issuer, verified against the issuer's JWKS;
* dev tokens minted by ``wiregate token issue`` (EdDSA, key in the store: the file in state_dir,
  or the shared PostgreSQL store so every instance accepts them), only when
  ``identity.dev_tokens = true``;
* static service-account tokens, matched by their sha256 in ``identity.users``.

Error messages tell the caller what to fix and never echo the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.config import DEV_TOKEN_ISSUER, Config, OIDCProvider, format_duration, parse_duration
from gateway.errors import WiregateError
from gateway.keys import ed25519_from_pem, ed25519_key_id

if TYPE_CHECKING:
    from gateway.store import Store

__all__ = [
    "AuthError", "Authenticator", "Identity", "dev_key_path", "format_duration", "groups_match",
    "issue_dev_token", "parse_duration",
]

DEV_TOKEN_AUDIENCE = "wiregate"
DEV_TOKEN_LEEWAY_SECONDS = 30
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
JWKS_MAX_BYTES = 1 << 20
# An unknown kid may mean the IdP rotated its keys, so it earns one refetch; but
# a stream of forged tokens must not turn the gateway into a JWKS hammer.
JWKS_REFETCH_INTERVAL_SECONDS = 30.0
# After a failed fetch, wait before trying again (each try may block 5 s).
JWKS_RETRY_AFTER_FAILURE_SECONDS = 30.0
VERIFIED_CACHE_SIZE = 1024

_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALG_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
# Only asymmetric algorithms: "none" and HS* (whose "key" would be public) are never accepted.
_ACCEPTED_ALGS = frozenset((*_RSA_ALGS, *_EC_ALG_BY_CURVE.values(), "EdDSA"))

_UNKNOWN_TOKEN = "unknown token: not a JWT from a configured issuer and not a service account token"


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """A caller proven by a token."""

    name: str
    groups: tuple[str, ...]
    method: Literal["oidc", "dev", "service", "ssh-key", "ssh-cert"]
    issuer: str | None = None
    expires_at: float | None = None  # unix time; None for service accounts


class AuthError(WiregateError):
    """The token was refused; the message says what to fix and never echoes the token."""


class _BadSignature(AuthError):
    pass


# ---- helpers --------------------------------------------------------------

def groups_match(groups: Sequence[str], patterns: Sequence[str]) -> bool:
    """True when any group matches any fnmatch-style pattern; the pattern "*" matches anyone, even with no groups."""
    if isinstance(groups, str) or isinstance(patterns, str):
        # a bare string would be matched character by character
        raise TypeError("groups_match takes sequences of strings, not a str")
    for pattern in patterns:
        if pattern == "*":
            return True
        if any(fnmatchcase(g, pattern) for g in groups):
            return True
    return False


def dev_key_path(cfg: Config) -> Path:
    return Path(cfg.gateway.state_dir) / "keys" / "dev_token_ed25519.pem"


def _iso(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError, OverflowError, OSError):
        return "an invalid time"


def _clip(text: Any, limit: int = 100) -> str:
    s = str(text)
    return s if len(s) <= limit else s[:limit - 3] + "..."


# ---- dev tokens -----------------------------------------------------------

def _dev_key_pem(cfg: Config) -> bytes:
    """The dev key of the store ``cfg`` names (blocking): the file in state_dir, or the shared
    PostgreSQL store's, so a token minted against one instance verifies on all of them."""
    from gateway.store import dev_signing_key_pem_for  # the store imports this module

    return dev_signing_key_pem_for(cfg)


def _dev_signing_key(pem: bytes) -> Ed25519PrivateKey:
    return ed25519_from_pem(pem, "the store's dev token key")


def issue_dev_token(cfg: Config, sub: str, groups: list[str], ttl_seconds: int) -> str:
    """A dev token for ``sub``, signed with the store's Ed25519 dev key (created on first use)."""
    if not cfg.identity.dev_tokens:
        raise WiregateError("dev tokens are disabled (identity.dev_tokens = false): "
                            "set it to true in the config to mint and accept them")
    if not sub or not sub.strip():
        raise WiregateError("the subject (--sub) must not be empty")
    if ttl_seconds <= 0:
        raise WiregateError(f"the lifetime (--ttl) must be positive, got {ttl_seconds} s")
    key = _dev_signing_key(_dev_key_pem(cfg))
    now = int(time.time())
    claims = {
        "iss": DEV_TOKEN_ISSUER,
        "aud": DEV_TOKEN_AUDIENCE,
        "sub": sub,
        "groups": list(groups),
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": ed25519_key_id(key.public_key())})


# ---- JWKS -----------------------------------------------------------------

class _Key(msgspec.Struct, frozen=True):
    kid: str | None
    algs: tuple[str, ...]  # algorithms this key may verify (from kty/crv, narrowed by its "alg")
    key: Any


def _algs_for_jwk(jwk: dict[str, Any]) -> tuple[str, ...]:
    kty = jwk.get("kty")
    if kty == "RSA":
        family: tuple[str, ...] = _RSA_ALGS
    elif kty == "EC" and jwk.get("crv") in _EC_ALG_BY_CURVE:
        family = (_EC_ALG_BY_CURVE[jwk["crv"]],)
    elif kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448"):
        family = ("EdDSA",)
    else:
        return ()  # "oct" (shared secrets) never: anyone who can read a JWKS could sign
    alg = jwk.get("alg")
    if alg is None:
        return family
    return (alg,) if alg in family else ()


def _parse_jwks(data: bytes, source: str) -> tuple[_Key, ...]:
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError:
        raise WiregateError(f"{source} is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise WiregateError(f'{source} is not a JWKS (no "keys" list)')
    keys = []
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        algs = _algs_for_jwk(jwk)
        if not algs:
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=algs[0]).key
        except (jwt.exceptions.PyJWKError, jwt.exceptions.InvalidKeyError, ValueError, TypeError, KeyError):
            continue  # one broken key must not take the issuer's other keys down
        kid = jwk.get("kid")
        keys.append(_Key(kid=kid if isinstance(kid, str) else None, algs=algs, key=key))
    if not keys:
        raise WiregateError(f"{source} holds no usable signing key (RSA, EC or OKP)")
    return tuple(keys)


def _load_jwks(provider: OIDCProvider) -> tuple[_Key, ...]:
    """Read or download a provider's JWKS. Blocking: runs in a worker thread."""
    where = f"the JWKS of issuer {provider.issuer!r}"
    if provider.jwks_file:
        try:
            data = Path(provider.jwks_file).read_bytes()
        except OSError as e:
            raise WiregateError(f"cannot read {where} from {provider.jwks_file}: {e.strerror or e}") from None
        return _parse_jwks(data, f"{where} ({provider.jwks_file})")
    url = provider.jwks_url or ""
    if not url.startswith(("https://", "http://")):
        raise WiregateError(f"cannot fetch {where}: jwks_url must be an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "wiregate"})
    try:
        with urllib.request.urlopen(request, timeout=JWKS_FETCH_TIMEOUT_SECONDS) as resp:
            data = resp.read(JWKS_MAX_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise WiregateError(f"cannot fetch {where} from {url}: HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise WiregateError(f"cannot fetch {where} from {url}: {e.reason}") from None
    except (OSError, ValueError) as e:
        raise WiregateError(f"cannot fetch {where} from {url}: {e}") from None
    if len(data) > JWKS_MAX_BYTES:
        raise WiregateError(f"cannot fetch {where} from {url}: larger than {JWKS_MAX_BYTES} bytes")
    return _parse_jwks(data, f"{where} ({url})")


class _JwksCache:
    """One provider's keys: cached, refetched on expiry or (rate-limited) on an unknown kid.

    Concurrent callers that need a fetch share one in-flight fetch.
    """

    def __init__(self, provider: OIDCProvider, clock: Callable[[], float]) -> None:
        self.provider = provider
        self._clock = clock
        self._keys: tuple[_Key, ...] | None = None
        self._fetched_at = float("-inf")
        self._last_refetch = float("-inf")
        self._failed_at = float("-inf")
        self._last_error = ""
        self._inflight: asyncio.Future[tuple[_Key, ...]] | None = None

    async def keys(self) -> tuple[tuple[_Key, ...], bool]:
        """The keys, and whether they were fetched by this very call."""
        now = self._clock()
        if self._keys is not None and now - self._fetched_at < self.provider.jwks_cache_seconds:
            return self._keys, False
        if now - self._failed_at < JWKS_RETRY_AFTER_FAILURE_SECONDS:
            if self._keys is not None:
                return self._keys, False
            raise AuthError(self._last_error)
        return await self._refresh(), True

    async def refetch_for_unknown_kid(self) -> tuple[_Key, ...] | None:
        """Fresh keys, or None when a refetch for an unknown kid happened too recently."""
        now = self._clock()
        if now - self._last_refetch < JWKS_REFETCH_INTERVAL_SECONDS:
            return None
        self._last_refetch = now
        return await self._refresh()

    async def _refresh(self) -> tuple[_Key, ...]:
        loop = asyncio.get_running_loop()
        fut = self._inflight
        if fut is None or fut.done() or fut.get_loop() is not loop:
            fut = self._inflight = loop.create_task(self._fetch())
        try:
            # shield: one caller giving up must not cancel the fetch the others wait for
            return await asyncio.shield(fut)
        finally:
            if fut.done() and self._inflight is fut:
                self._inflight = None

    async def _fetch(self) -> tuple[_Key, ...]:
        try:
            keys = await asyncio.to_thread(_load_jwks, self.provider)
        except WiregateError as e:
            self._failed_at = self._clock()
            self._last_error = str(e)
            if self._keys is not None:
                # the IdP being briefly unreachable must not lock everyone out
                return self._keys
            raise AuthError(str(e)) from None
        self._keys = keys
        self._fetched_at = self._clock()
        return keys


# ---- the authenticator ----------------------------------------------------

def _jwt_header(token: str) -> dict[str, Any] | None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.exceptions.DecodeError:
        return None
    return header if isinstance(header, dict) else None


def _claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name, or by dotted path into nested objects (e.g. "realm_access.roles")."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _groups(value: Any, claim: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(g, str) for g in value):
        return tuple(value)
    raise AuthError(f"token claim {claim!r} must be a string or a list of strings: "
                    "check identity.oidc groups_claim")


def _explain(e: jwt.exceptions.InvalidTokenError, token: str, issuer: str,
             audience: str | Sequence[str]) -> AuthError:
    """Turn a pyjwt error into a message that says what to fix."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.exceptions.InvalidTokenError:
        claims = {}
    if isinstance(e, jwt.exceptions.ExpiredSignatureError):
        return AuthError(f"token expired at {_iso(claims.get('exp'))}: get a new one")
    if isinstance(e, jwt.exceptions.ImmatureSignatureError):
        nbf = claims.get("nbf")
        when = nbf if isinstance(nbf, (int, float)) and nbf > time.time() else claims.get("iat")
        return AuthError(f"token is not valid before {_iso(when)}: "
                         "check the clocks of the issuer and the gateway, or wait")
    if isinstance(e, jwt.exceptions.InvalidAudienceError):
        wanted = audience if isinstance(audience, str) else " or ".join(audience)
        return AuthError(f"token audience does not include {wanted}")
    if isinstance(e, jwt.exceptions.InvalidIssuerError):
        return AuthError(f"token issuer is not {issuer!r}")
    if isinstance(e, jwt.exceptions.MissingRequiredClaimError):
        return AuthError(f"token has no {e.claim!r} claim: the issuer {issuer!r} must set it")
    if isinstance(e, jwt.exceptions.InvalidAlgorithmError):
        return AuthError(f"token algorithm is not accepted for issuer {issuer!r}")
    if isinstance(e, jwt.exceptions.DecodeError):
        return AuthError("token is not a well-formed JWT")
    return AuthError(f"token is not valid: {_clip(e)}")


def _decode(token: str, keys: Sequence[_Key], alg: str, *, issuer: str,
            audience: str | Sequence[str], leeway: int) -> dict[str, Any]:
    usable = [k for k in keys if alg in k.algs]
    if not usable:
        raise _BadSignature(f"token signature is not valid for issuer {issuer!r}: "
                            f"its keys do not use algorithm {alg}")
    for k in usable:
        try:
            # algorithms=[alg] with alg checked against the key's type: no algorithm confusion
            return jwt.decode(token, key=k.key, algorithms=[alg], audience=audience, issuer=issuer,
                              leeway=leeway, options={"require": ["exp", "iss", "aud"]})
        except jwt.exceptions.InvalidSignatureError:
            continue  # without a kid, try the issuer's next key
        except jwt.exceptions.InvalidTokenError as e:
            raise _explain(e, token, issuer, audience) from None
    raise _BadSignature(f"token signature is not valid for issuer {issuer!r}")


class Authenticator:
    """Verifies tokens for one loaded config. Holds its own JWKS and verification caches."""

    def __init__(self, cfg: Config, *, clock: Callable[[], float] = time.monotonic,
                 store: "Store | None" = None) -> None:
        self._providers = {p.issuer: _JwksCache(p, clock) for p in cfg.identity.oidc}
        self._service = [(bytes.fromhex(u.token_sha256), u) for u in cfg.identity.users if u.token_sha256]
        self._dev_enabled = cfg.identity.dev_tokens
        # an opened store hands out its key itself; from a config alone it is looked up on first use
        self._dev_key_pem: Callable[[], bytes] = (store.dev_signing_key_pem if store is not None
                                                  else lambda: _dev_key_pem(cfg))
        self._dev_key_elsewhere = "another store" if cfg.gateway.store else "another state_dir"
        self._dev_public_key: Ed25519PublicKey | None = None
        # sha256(token) -> Identity, for JWTs until they expire; the raw token is never kept
        self._verified: dict[bytes, Identity] = {}

    async def authenticate(self, token: str) -> Identity:
        token = (token or "").strip()
        if not token:
            raise AuthError("no token given: pass an OIDC token, a dev token (wiregate token issue) "
                            "or a service account token")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cached(digest)
        if cached is not None:
            return cached
        header = _jwt_header(token) if token.count(".") == 2 else None
        if header is None:
            return self._service_account(digest)
        identity = await self._verify_jwt(token, header)
        self._remember(digest, identity)
        return identity

    # -- service accounts --

    def _service_account(self, digest: bytes) -> Identity:
        found = None
        for expected, user in self._service:
            # compare with every entry: the time taken says nothing about which one matched
            if hmac.compare_digest(expected, digest) and found is None:
                found = user
        if found is None:
            raise AuthError(_UNKNOWN_TOKEN)
        return Identity(name=found.name, groups=tuple(found.groups), method="service")

    # -- JWTs --

    async def _verify_jwt(self, token: str, header: dict[str, Any]) -> Identity:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.exceptions.InvalidTokenError:
            raise AuthError("token is not a well-formed JWT") from None
        iss = unverified.get("iss")
        if iss == DEV_TOKEN_ISSUER:
            if not self._dev_enabled:
                raise AuthError("dev tokens are disabled (identity.dev_tokens = false)")
        elif not isinstance(iss, str):
            raise AuthError(f"{_UNKNOWN_TOKEN} (it has no 'iss' claim)")
        elif iss not in self._providers:
            raise AuthError(f"token issuer {_clip(iss)!r} is not configured")
        alg = header.get("alg")
        if alg not in _ACCEPTED_ALGS:
            raise AuthError(f"token algorithm {_clip(alg, 20)!r} is not accepted: "
                            "only asymmetric signatures (RS*, PS*, ES*, EdDSA) are")
        if iss == DEV_TOKEN_ISSUER:
            return await self._verify_dev(token, alg)
        return await self._verify_oidc(token, header, alg, self._providers[iss])

    async def _verify_oidc(self, token: str, header: dict[str, Any], alg: str, cache: _JwksCache) -> Identity:
        provider = cache.provider
        keys, fresh = await cache.keys()
        kid = header.get("kid")
        candidates = [k for k in keys if kid is None or k.kid == kid]
        if kid is not None and not candidates and not fresh:
            # maybe the IdP rotated its keys since we fetched them
            refreshed = await cache.refetch_for_unknown_kid()
            if refreshed is not None:
                candidates = [k for k in refreshed if k.kid == kid]
        if not candidates:
            raise AuthError(f"token signature is not valid for issuer {provider.issuer!r}: "
                            f"key id {_clip(kid, 60)!r} is not in its JWKS")
        claims = _decode(token, candidates, alg, issuer=provider.issuer, audience=provider.audience,
                         leeway=provider.leeway_seconds)
        return self._identity(claims, "oidc", provider.issuer, provider.subject_claim, provider.groups_claim)

    async def _verify_dev(self, token: str, alg: str) -> Identity:
        public_key = await self._dev_key()
        key = _Key(kid=None, algs=("EdDSA",), key=public_key)
        try:
            claims = _decode(token, [key], alg, issuer=DEV_TOKEN_ISSUER, audience=DEV_TOKEN_AUDIENCE,
                             leeway=DEV_TOKEN_LEEWAY_SECONDS)
        except _BadSignature:
            raise AuthError(f"token signature is not valid for issuer {DEV_TOKEN_ISSUER!r}: "
                            f"it was minted with another gateway's key ({self._dev_key_elsewhere})") from None
        return self._identity(claims, "dev", DEV_TOKEN_ISSUER, "sub", "groups")

    async def _dev_key(self) -> Ed25519PublicKey:
        if self._dev_public_key is None:
            try:
                private = _dev_signing_key(await asyncio.to_thread(self._dev_key_pem))
            except WiregateError as e:
                raise AuthError(f"dev tokens cannot be verified: {e}") from None
            self._dev_public_key = private.public_key()
        return self._dev_public_key

    @staticmethod
    def _identity(claims: dict[str, Any], method: Literal["oidc", "dev"], issuer: str,
                  subject_claim: str, groups_claim: str) -> Identity:
        name = _claim(claims, subject_claim)
        if not isinstance(name, str) or not name:
            raise AuthError(f"token has no {subject_claim!r} claim naming the user: "
                            "check identity.oidc subject_claim")
        exp = claims.get("exp")
        return Identity(name=name, groups=_groups(_claim(claims, groups_claim), groups_claim),
                        method=method, issuer=issuer,
                        expires_at=float(exp) if isinstance(exp, (int, float)) else None)

    # -- verification cache --

    def _cached(self, digest: bytes) -> Identity | None:
        identity = self._verified.get(digest)
        if identity is None:
            return None
        if identity.expires_at is not None and identity.expires_at > time.time():
            return identity
        del self._verified[digest]
        return None

    def _remember(self, digest: bytes, identity: Identity) -> None:
        if identity.expires_at is None:
            return
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            now = time.time()
            for d in [d for d, i in self._verified.items() if (i.expires_at or 0) <= now]:
                del self._verified[d]
            while len(self._verified) >= VERIFIED_CACHE_SIZE:
                del self._verified[next(iter(self._verified))]  # oldest first
        self._verified[digest] = identity
