"""Identity: real keys, real JWTs, a real JWKS over HTTP. No mocks of pyjwt."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.config import Config, GatewaySection, IdentitySection, OIDCProvider, UserAccount, load_config
from gateway.errors import WiregateError
from gateway.identity import (
    JWKS_REFETCH_INTERVAL_SECONDS,
    AuthError,
    Authenticator,
    Identity,
    dev_key_path,
    groups_match,
    issue_dev_token,
    parse_duration,
)
from gateway.keys import ed25519_key_id, load_or_create_ed25519

ISS = "https://idp.test/"
AUD = "wiregate"


# ---- fixtures and helpers ---------------------------------------------------

@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # the local JWKS server must be reached directly, whatever the environment says
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def jwk(key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        d = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        d = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        d = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        d["kid"] = kid
    d["use"] = "sig"
    d.update(extra)
    return d


def make_token(key: Any, *, kid: str | None = "k1", alg: str = "RS256", headers: dict | None = None,
               **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISS, "aud": AUD, "sub": "alice", "groups": ["dev"], "iat": now, "nbf": now, "exp": now + 300}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    hdrs = dict(headers or {})
    if kid is not None:
        hdrs["kid"] = kid
    return jwt.encode(payload, key, algorithm=alg, headers=hdrs)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict, payload: dict, signature: bytes = b"") -> str:
    h = b64url(json.dumps(header).encode())
    p = b64url(json.dumps(payload).encode())
    return f"{h}.{p}.{b64url(signature)}"


def default_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "sub": "alice", "groups": ["dev"], "iat": now, "exp": now + 300}
    claims.update(overrides)
    return claims


def provider(**kw: Any) -> OIDCProvider:
    kw.setdefault("issuer", ISS)
    kw.setdefault("audience", AUD)
    return OIDCProvider(**kw)


def make_cfg(tmp_path: Path, *, oidc: list[OIDCProvider] = (), users: list[UserAccount] = (),
             dev: bool = False, state: str = "state") -> Config:
    return Config(gateway=GatewaySection(state_dir=str(tmp_path / state)),
                  identity=IdentitySection(dev_tokens=dev, oidc=list(oidc), users=list(users)))


def write_jwks(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


def authenticate(auth: Authenticator, token: str) -> Identity:
    return asyncio.run(auth.authenticate(token))


def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(AuthError) as info:
        authenticate(auth, token)
    message = str(info.value)
    assert token not in message
    return message


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWKS that tests can change."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.hits = 0
        self.delay = 0.0
        self.status = 200
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.hits += 1
                time.sleep(server.delay)
                body = json.dumps(server.jwks).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server():
    server = JwksServer()
    yield server
    server.close()


@pytest.fixture
def file_auth(tmp_path, rsa_key, ec_key):
    path = write_jwks(tmp_path / "jwks.json", jwk(rsa_key, "k1"), jwk(ec_key, "e1"))
    return Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=str(path))]))


# ---- OIDC via jwks_file -----------------------------------------------------

def test_rsa_token_from_jwks_file(file_auth, rsa_key):
    token = make_token(rsa_key, groups=["dev", "agents"])
    ident = authenticate(file_auth, token)
    assert ident.name == "alice" and ident.groups == ("dev", "agents")
    assert ident.method == "oidc" and ident.issuer == ISS
    assert ident.expires_at is not None and ident.expires_at > time.time()


def test_ec_token(file_auth, ec_key):
    assert authenticate(file_auth, make_token(ec_key, kid="e1", alg="ES256")).name == "alice"


def test_ps256_and_eddsa(tmp_path, rsa_key):
    ed = ed25519.Ed25519PrivateKey.generate()
    path = write_jwks(tmp_path / "jwks.json", jwk(rsa_key, "k1"), jwk(ed, "ed"))
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=str(path))]))
    assert authenticate(auth, make_token(rsa_key, alg="PS256")).name == "alice"
    assert authenticate(auth, make_token(ed, kid="ed", alg="EdDSA")).name == "alice"


def test_expired_token(file_auth, rsa_key):
    exp = int(time.time()) - 3600
    message = refused(file_auth, make_token(rsa_key, exp=exp, iat=exp - 60, nbf=exp - 60))
    iso = datetime.fromtimestamp(exp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert message == f"token expired at {iso}: get a new one"


def test_expiry_within_leeway_is_accepted(file_auth, rsa_key):
    now = int(time.time())
    assert authenticate(file_auth, make_token(rsa_key, exp=now - 5, iat=now - 60, nbf=now - 60)).name == "alice"


def test_not_yet_valid_token(file_auth, rsa_key):
    nbf = int(time.time()) + 3600
    message = refused(file_auth, make_token(rsa_key, nbf=nbf, exp=nbf + 60))
    assert message.startswith("token is not valid before ")
    assert "check the clocks" in message


def test_unconfigured_issuer(file_auth, rsa_key):
    assert refused(file_auth, make_token(rsa_key, iss="https://evil.test/")) == \
        "token issuer 'https://evil.test/' is not configured"


def test_wrong_audience(file_auth, rsa_key):
    assert refused(file_auth, make_token(rsa_key, aud="another-app")) == "token audience does not include wiregate"


def test_audience_list_in_config_and_token(tmp_path, rsa_key):
    path = write_jwks(tmp_path / "jwks.json", jwk(rsa_key, "k1"))
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(audience=["wg-a", "wg-b"], jwks_file=str(path))]))
    assert authenticate(auth, make_token(rsa_key, aud=["other", "wg-b"])).name == "alice"
    assert refused(auth, make_token(rsa_key, aud="other")) == "token audience does not include wg-a or wg-b"


def test_bad_signature(file_auth, rsa_key2):
    # signed by another key that claims the issuer's kid
    message = refused(file_auth, make_token(rsa_key2, kid="k1"))
    assert message == f"token signature is not valid for issuer {ISS!r}"


def test_tampered_payload(file_auth, rsa_key):
    h, _, s = make_token(rsa_key).split(".")
    forged = f"{h}.{b64url(json.dumps(default_claims(sub='root', groups=['admins'])).encode())}.{s}"
    assert refused(file_auth, forged).startswith("token signature is not valid")


def test_signature_error_wins_over_expiry(file_auth, rsa_key2):
    # claims of a forged token are not worth explaining
    exp = int(time.time()) - 3600
    assert refused(file_auth, make_token(rsa_key2, exp=exp, iat=exp - 1)).startswith("token signature is not valid")


def test_alg_none_is_refused(file_auth):
    token = unsigned_token({"alg": "none", "typ": "JWT", "kid": "k1"}, default_claims())
    assert "token algorithm 'none' is not accepted" in refused(file_auth, token)


def test_hs256_with_public_key_as_secret_is_refused(file_auth, rsa_key):
    # the classic algorithm-confusion attack: HMAC keyed with the issuer's public key
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "JWT", "kid": "k1"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(default_claims()).encode())}"
    sig = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert "token algorithm 'HS256' is not accepted" in refused(file_auth, f"{signing_input}.{b64url(sig)}")


def test_oct_keys_in_jwks_are_ignored(tmp_path, rsa_key):
    secret = b"shared-secret-0123456789abcdef0123"
    oct_key = {"kty": "oct", "kid": "s1", "k": b64url(secret), "alg": "HS256"}
    path = write_jwks(tmp_path / "jwks.json", oct_key, jwk(rsa_key, "k1"))
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=str(path))]))
    token = jwt.encode(default_claims(), secret, algorithm="HS256", headers={"kid": "s1"})
    assert "not accepted" in refused(auth, token)
    assert authenticate(auth, make_token(rsa_key)).name == "alice"


def test_algorithm_must_fit_the_key(file_auth, ec_key):
    # an EC signature presented under the RSA key's kid
    message = refused(file_auth, make_token(ec_key, kid="k1", alg="ES256"))
    assert message.startswith(f"token signature is not valid for issuer {ISS!r}")


def test_token_without_kid_tries_each_key(file_auth, ec_key, rsa_key):
    assert authenticate(file_auth, make_token(ec_key, kid=None, alg="ES256")).name == "alice"
    assert authenticate(file_auth, make_token(rsa_key, kid=None)).name == "alice"


def test_token_without_exp_is_refused(file_auth, rsa_key):
    assert refused(file_auth, make_token(rsa_key, exp=None)) == f"token has no 'exp' claim: the issuer {ISS!r} must set it"


def test_groups_claim_string_list_custom_and_nested(tmp_path, rsa_key):
    path = str(write_jwks(tmp_path / "jwks.json", jwk(rsa_key, "k1")))
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=path)]))
    assert authenticate(auth, make_token(rsa_key, groups="dev")).groups == ("dev",)
    assert authenticate(auth, make_token(rsa_key, groups=["a", "b"])).groups == ("a", "b")
    assert authenticate(auth, make_token(rsa_key, groups=None)).groups == ()
    assert "must be a string or a list of strings" in refused(auth, make_token(rsa_key, groups={"a": 1}))

    custom = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=path, groups_claim="roles",
                                                             subject_claim="email")]))
    ident = authenticate(custom, make_token(rsa_key, roles="sre", email="alice@example.com"))
    assert (ident.name, ident.groups) == ("alice@example.com", ("sre",))
    assert "no 'email' claim" in refused(custom, make_token(rsa_key, roles="sre"))

    nested = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=path, groups_claim="realm_access.roles")]))
    assert authenticate(nested, make_token(rsa_key, realm_access={"roles": ["dba"]})).groups == ("dba",)


def test_missing_subject(file_auth, rsa_key):
    assert "no 'sub' claim" in refused(file_auth, make_token(rsa_key, sub=None))


def test_jwks_file_rotation_rereads_the_file(tmp_path, rsa_key, rsa_key2):
    path = write_jwks(tmp_path / "jwks.json", jwk(rsa_key, "k1"))
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=str(path))]))
    assert authenticate(auth, make_token(rsa_key)).name == "alice"
    write_jwks(path, jwk(rsa_key, "k1"), jwk(rsa_key2, "k2"))
    assert authenticate(auth, make_token(rsa_key2, kid="k2")).name == "alice"


def test_missing_jwks_file(tmp_path, rsa_key):
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=str(tmp_path / "nope.json"))]))
    assert "cannot read the JWKS of issuer" in refused(auth, make_token(rsa_key))


def test_jwks_file_that_is_not_a_jwks(tmp_path, rsa_key):
    (tmp_path / "j.json").write_text('{"not": "keys"}')
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=str(tmp_path / "j.json"))]))
    assert 'no "keys" list' in refused(auth, make_token(rsa_key))


def test_provider_from_loaded_config(tmp_path, rsa_key):
    write_jwks(tmp_path / "jwks.json", jwk(rsa_key, "k1"))
    (tmp_path / "wiregate.toml").write_text(f'[[identity.oidc]]\nissuer = "{ISS}"\naudience = "{AUD}"\n'
                                            'jwks_file = "jwks.json"\n')
    auth = Authenticator(load_config(tmp_path / "wiregate.toml"))
    assert authenticate(auth, make_token(rsa_key)).name == "alice"


# ---- OIDC via jwks_url (a real HTTP server) -----------------------------------

def url_auth(tmp_path: Path, server: JwksServer, clock: Clock, cache_seconds: int = 300) -> Authenticator:
    cfg = make_cfg(tmp_path, oidc=[provider(jwks_url=server.url, jwks_cache_seconds=cache_seconds)])
    return Authenticator(cfg, clock=clock)


def test_jwks_url_is_cached(tmp_path, jwks_server, rsa_key):
    jwks_server.jwks = {"keys": [jwk(rsa_key, "k1")]}
    auth = url_auth(tmp_path, jwks_server, Clock())

    async def scenario() -> None:
        for sub in ("alice", "bob", "carol"):
            assert (await auth.authenticate(make_token(rsa_key, sub=sub))).name == sub

    asyncio.run(scenario())
    assert jwks_server.hits == 1


def test_jwks_url_cache_expires(tmp_path, jwks_server, rsa_key):
    jwks_server.jwks = {"keys": [jwk(rsa_key, "k1")]}
    clock = Clock()
    auth = url_auth(tmp_path, jwks_server, clock, cache_seconds=60)
    authenticate(auth, make_token(rsa_key, sub="a"))
    clock.now += 59
    authenticate(auth, make_token(rsa_key, sub="b"))
    assert jwks_server.hits == 1
    clock.now += 2
    authenticate(auth, make_token(rsa_key, sub="c"))
    assert jwks_server.hits == 2


def test_key_rotation_then_refetch_rate_limit(tmp_path, jwks_server, rsa_key, rsa_key2, ec_key):
    jwks_server.jwks = {"keys": [jwk(rsa_key, "k1")]}
    clock = Clock()
    auth = url_auth(tmp_path, jwks_server, clock)
    assert authenticate(auth, make_token(rsa_key)).name == "alice"
    assert jwks_server.hits == 1

    # the IdP rotates: a token with the new kid causes exactly one refetch
    jwks_server.jwks = {"keys": [jwk(rsa_key, "k1"), jwk(rsa_key2, "k2")]}
    assert authenticate(auth, make_token(rsa_key2, kid="k2", sub="bob")).name == "bob"
    assert jwks_server.hits == 2

    # a stream of tokens with unknown kids does not hammer the IdP
    for i in range(5):
        message = refused(auth, make_token(ec_key, kid=f"forged-{i}", alg="ES256"))
        assert "key id 'forged-" in message and "is not in its JWKS" in message
    assert jwks_server.hits == 2

    # after the interval, one more refetch is allowed
    clock.now += JWKS_REFETCH_INTERVAL_SECONDS + 1
    refused(auth, make_token(ec_key, kid="forged-x", alg="ES256"))
    refused(auth, make_token(ec_key, kid="forged-y", alg="ES256"))
    assert jwks_server.hits == 3


def test_unknown_kid_on_first_fetch_does_not_fetch_twice(tmp_path, jwks_server, rsa_key, ec_key):
    jwks_server.jwks = {"keys": [jwk(rsa_key, "k1")]}
    auth = url_auth(tmp_path, jwks_server, Clock())
    refused(auth, make_token(ec_key, kid="nope", alg="ES256"))
    assert jwks_server.hits == 1


def test_concurrent_callers_share_one_fetch_off_the_loop(tmp_path, jwks_server, rsa_key):
    jwks_server.jwks = {"keys": [jwk(rsa_key, "k1")]}
    jwks_server.delay = 0.3
    auth = url_auth(tmp_path, jwks_server, Clock())
    tokens = [make_token(rsa_key, sub=f"user{i}") for i in range(20)]

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        idents = await asyncio.gather(*(auth.authenticate(t) for t in tokens))
        tick_task.cancel()
        assert [i.name for i in idents] == [f"user{i}" for i in range(20)]
        return ticks

    ticks = asyncio.run(scenario())
    assert jwks_server.hits == 1
    assert ticks >= 10, "the event loop was blocked while the JWKS was fetched"


def test_idp_unreachable(tmp_path, rsa_key):
    server = JwksServer()
    server.close()  # nothing listens on that port any more
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_url=server.url)]))
    assert "cannot fetch the JWKS of issuer" in refused(auth, make_token(rsa_key))


def test_stale_keys_survive_an_idp_outage(tmp_path, jwks_server, rsa_key):
    jwks_server.jwks = {"keys": [jwk(rsa_key, "k1")]}
    clock = Clock()
    auth = url_auth(tmp_path, jwks_server, clock, cache_seconds=10)
    authenticate(auth, make_token(rsa_key, sub="a"))
    jwks_server.status = 500
    clock.now += 11
    assert authenticate(auth, make_token(rsa_key, sub="b")).name == "b"
    hits = jwks_server.hits
    # failures are not retried on every request
    authenticate(auth, make_token(rsa_key, sub="c"))
    assert jwks_server.hits == hits


def test_http_error_status_is_reported(tmp_path, jwks_server, rsa_key):
    jwks_server.status = 404
    auth = url_auth(tmp_path, jwks_server, Clock())
    assert "HTTP 404" in refused(auth, make_token(rsa_key))


# ---- the verification cache -------------------------------------------------

def test_verified_tokens_are_cached_by_hash_only(tmp_path, jwks_server, rsa_key):
    jwks_server.jwks = {"keys": [jwk(rsa_key, "k1")]}
    clock = Clock()
    auth = url_auth(tmp_path, jwks_server, clock, cache_seconds=1)
    token = make_token(rsa_key)
    first = authenticate(auth, token)
    # keys expired and the IdP gone: a re-used token is still known
    clock.now += 100
    jwks_server.status = 500
    assert authenticate(auth, token) == first
    assert jwks_server.hits == 1
    assert token not in repr(vars(auth))
    assert all(len(k) == 32 for k in auth._verified)


def test_cached_token_still_expires(tmp_path, rsa_key):
    path = write_jwks(tmp_path / "jwks.json", jwk(rsa_key, "k1"))
    auth = Authenticator(make_cfg(tmp_path, oidc=[provider(jwks_file=str(path), leeway_seconds=0)]))
    exp = int(time.time()) + 3  # whole seconds: far enough ahead for a loaded machine to use it once
    token = make_token(rsa_key, exp=exp)
    authenticate(auth, token)
    time.sleep(max(0.0, exp - time.time()) + 1.1)
    assert refused(auth, token).startswith("token expired at")


# ---- dev tokens ---------------------------------------------------------------

def test_dev_token_round_trip_and_key_file(tmp_path):
    cfg = make_cfg(tmp_path, dev=True)
    token = issue_dev_token(cfg, sub="alice", groups=["dev", "ops"], ttl_seconds=3600)
    key_file = dev_key_path(cfg)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "wiregate-dev" and claims["aud"] == "wiregate"
    assert {"sub", "groups", "iat", "nbf", "exp", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 3600

    ident = authenticate(Authenticator(cfg), token)
    assert ident == Identity(name="alice", groups=("dev", "ops"), method="dev", issuer="wiregate-dev",
                             expires_at=float(claims["exp"]))


def test_dev_key_persists_across_processes(tmp_path):
    cfg = make_cfg(tmp_path, dev=True)
    first = issue_dev_token(cfg, sub="a", groups=[], ttl_seconds=60)
    pem = dev_key_path(cfg).read_bytes()
    second = issue_dev_token(cfg, sub="b", groups=[], ttl_seconds=60)
    assert dev_key_path(cfg).read_bytes() == pem
    assert jwt.get_unverified_header(first)["kid"] == jwt.get_unverified_header(second)["kid"]
    fresh = Authenticator(cfg)  # a new gateway process: same state_dir, same key
    assert authenticate(fresh, first).name == "a"
    assert authenticate(fresh, second).name == "b"


def test_dev_token_from_another_state_dir(tmp_path):
    token = issue_dev_token(make_cfg(tmp_path, dev=True, state="one"), sub="a", groups=[], ttl_seconds=60)
    message = refused(Authenticator(make_cfg(tmp_path, dev=True, state="two")), token)
    assert "signature is not valid for issuer 'wiregate-dev'" in message


def test_dev_tokens_disabled(tmp_path):
    token = issue_dev_token(make_cfg(tmp_path, dev=True), sub="a", groups=[], ttl_seconds=60)
    disabled = make_cfg(tmp_path, dev=False)
    assert refused(Authenticator(disabled), token) == "dev tokens are disabled (identity.dev_tokens = false)"
    with pytest.raises(WiregateError, match=r"dev tokens are disabled \(identity.dev_tokens = false\)"):
        issue_dev_token(disabled, sub="a", groups=[], ttl_seconds=60)


def test_expired_dev_token(tmp_path):
    cfg = make_cfg(tmp_path, dev=True)
    key = load_or_create_ed25519(dev_key_path(cfg))
    past = int(time.time()) - 3600
    token = jwt.encode({"iss": "wiregate-dev", "aud": "wiregate", "sub": "a", "groups": [], "iat": past,
                        "nbf": past, "exp": past + 60}, key, algorithm="EdDSA")
    assert refused(Authenticator(cfg), token).startswith("token expired at")


def test_dev_issue_rejects_bad_input(tmp_path):
    cfg = make_cfg(tmp_path, dev=True)
    with pytest.raises(WiregateError, match="must not be empty"):
        issue_dev_token(cfg, sub="", groups=[], ttl_seconds=60)
    with pytest.raises(WiregateError, match="must be positive"):
        issue_dev_token(cfg, sub="a", groups=[], ttl_seconds=0)


def test_cli_token_issue(tmp_path, capsys):
    from gateway.cli import main

    (tmp_path / "wiregate.toml").write_text("[identity]\ndev_tokens = true\n")
    assert main(["token", "issue", "--sub", "alice", "--groups", "dev,ops", "--ttl", "30m",
                 "-c", str(tmp_path / "wiregate.toml")]) == 0
    token = capsys.readouterr().out.strip()
    cfg = load_config(tmp_path / "wiregate.toml")
    ident = authenticate(Authenticator(cfg), token)
    assert (ident.name, ident.groups) == ("alice", ("dev", "ops"))
    assert (tmp_path / ".wiregate" / "keys" / "dev_token_ed25519.pem").exists()


# ---- keys -----------------------------------------------------------------------

def test_key_with_loose_permissions_is_refused(tmp_path):
    path = tmp_path / "keys" / "k.pem"
    load_or_create_ed25519(path)
    path.chmod(0o644)
    with pytest.raises(WiregateError, match="chmod 600"):
        load_or_create_ed25519(path)


def test_concurrent_key_creation_agrees(tmp_path):
    path = tmp_path / "keys" / "k.pem"
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: load_or_create_ed25519(path), range(16)))
    ids = {ed25519_key_id(k.public_key()) for k in keys}
    assert len(ids) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["k.pem"]  # no temp files left


def test_not_a_key_file(tmp_path):
    path = tmp_path / "k.pem"
    path.write_text("garbage")
    os.chmod(path, 0o600)
    with pytest.raises(WiregateError, match="not an unencrypted PEM private key"):
        load_or_create_ed25519(path)


# ---- service accounts -------------------------------------------------------------

API_TOKEN = "wg_api_0123456789abcdef"


@pytest.fixture
def service_auth(tmp_path):
    users = [UserAccount(name="ci-bot", token_sha256=hashlib.sha256(API_TOKEN.encode()).hexdigest().upper(),
                         groups=["ci"]),
             UserAccount(name="keys-only", ssh_keys=[])]
    return Authenticator(make_cfg(tmp_path, users=users))


def test_service_account_match(service_auth):
    ident = authenticate(service_auth, API_TOKEN)
    assert ident == Identity(name="ci-bot", groups=("ci",), method="service")
    assert authenticate(service_auth, f"  {API_TOKEN}\n").name == "ci-bot"


def test_service_account_mismatch(service_auth):
    assert refused(service_auth, API_TOKEN + "x") == \
        "unknown token: not a JWT from a configured issuer and not a service account token"
    # two dots but not a JWT: still just an unknown token
    assert refused(service_auth, "abc.def.ghi").startswith("unknown token")


def test_empty_token(service_auth):
    assert refused(service_auth, "   ").startswith("no token given")


def test_jwt_without_issuer(service_auth, rsa_key):
    assert refused(service_auth, make_token(rsa_key, iss=None)).startswith("unknown token")


# ---- groups_match / parse_duration -------------------------------------------------

def test_groups_match():
    assert groups_match([], ["*"])
    assert groups_match(["dev"], ["dev"])
    assert groups_match(["team-db"], ["ops", "team-*"])
    assert not groups_match(["dev"], [])
    assert not groups_match([], ["dev"])
    assert not groups_match(["Dev"], ["dev"])  # case-sensitive everywhere
    assert not groups_match(["developers"], ["dev"])
    assert groups_match(["a/b"], ["a/*"])
    with pytest.raises(TypeError):
        groups_match("dev", ["d*"])


def test_parse_duration_is_exported_from_identity():
    assert parse_duration("1h") == 3600


def test_identity_is_frozen_and_serialisable():
    ident = Identity(name="a", groups=("x",), method="dev", issuer="wiregate-dev", expires_at=1.0)
    with pytest.raises(AttributeError):
        ident.name = "b"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(ident), type=Identity) == ident
