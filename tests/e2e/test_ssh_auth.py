"""SSH caller authentication and the listener's limits: user certificates, a stalled login,
connections that never authenticate."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tests.e2e.ssh_gateway import SshGateway


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test-ca", "-f", str(d / "ca")], check=True)
    return d / "ca"


@pytest.fixture(scope="module")
def g(sshd, ca, tmp_path_factory):
    gateway = SshGateway(tmp_path_factory.mktemp("sshgw"), sshd,
                         identity={"ssh_ca_keys": [(ca.with_suffix(".pub")).read_text().strip()]},
                         extra={"ssh": {"login_timeout": "2s", "max_unauthenticated": 8}}).start()
    yield gateway
    gateway.stop()


def _user_key(tmp_path, name: str):
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def _sign(ca, key, principal: str, validity: str = "+1h"):
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca), "-I", f"{principal}-cert", "-n", principal, "-V", validity,
                    str(key) + ".pub"], check=True, capture_output=True)
    return key.parent / (key.name + "-cert.pub")


def _ssh_with(g, key, target: str, *command: str):
    options = [f"IdentityFile={key}" if o.startswith("IdentityFile=") else o for o in g.options()]
    return subprocess.run(["ssh", *options, f"{target}@127.0.0.1", *command],
                          capture_output=True, timeout=60)


def test_user_certificate_signed_by_the_ca(g, ca, tmp_path):
    key = _user_key(tmp_path, "carol")
    _sign(ca, key, "alice")  # alice is an [[identity.users]] entry (groups: sre)
    res = _ssh_with(g, key, "web", "echo cert-ok")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"cert-ok\n"
    # the recording says who: the principal's identity, authenticated by certificate
    listed = subprocess.run([sys.executable, "-m", "gateway", "sessions", "list", "--json", "-c", str(g.gw.config_path)],
                            capture_output=True, text=True)
    assert '"auth": "ssh-cert"' in listed.stdout and '"identity": "alice"' in listed.stdout


@pytest.mark.parametrize("principal,validity,why", [
    ("mallory", "+1h", "principal names no configured identity"),
    ("bob", "+1h", "bob's groups are not allowed on the target"),
    ("alice", "-2h:-1h", "expired"),
])
def test_refused_certificates(g, ca, tmp_path, principal, validity, why):
    key = _user_key(tmp_path, "user")
    _sign(ca, key, principal, validity)
    res = _ssh_with(g, key, "web", "echo no")
    assert res.returncode == 255, why
    assert res.stdout == b""


def test_a_failed_signature_with_a_listed_key_does_not_lend_its_identity(g, ca, tmp_path):
    """Regression: alice's public key offered with a bad signature, then bob's valid certificate
    (bob may not use the target), must not log in as alice; nor may bob's certificate alone."""
    import asyncio

    import asyncssh

    bob_key = asyncssh.generate_private_key("ssh-ed25519")
    ca_key = asyncssh.read_private_key(str(ca))
    cert = ca_key.generate_user_certificate(bob_key, "bob", principals=["bob"])
    forged = asyncssh.load_keypairs([bob_key])[0]
    forged.public_data = forged.key_public_data = g.alice.key.public_data  # signs with bob's key
    real = asyncssh.load_keypairs([(bob_key, cert)])[0]

    async def attempt(keys):
        async with g.connect("web", client_keys=keys, preferred_auth="publickey") as conn:
            return (await conn.run("echo in", check=False)).stdout
    for keys in ([real], [forged, real]):
        with pytest.raises(asyncssh.PermissionDenied):
            asyncio.run(attempt(keys))


def test_certificate_from_another_ca_refused(g, tmp_path):
    other = _user_key(tmp_path, "other-ca")
    key = _user_key(tmp_path, "user")
    _sign(other, key, "alice")
    assert _ssh_with(g, key, "web", "echo no").returncode == 255


def test_stalled_login_is_cut_off(g):
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"SSH-2.0-staller\r\n")
        started = time.monotonic()
        s.settimeout(15)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - started
    assert elapsed < 10, f"a stalled login was kept {elapsed:.1f} s (login_timeout is 2 s)"
    assert g.ssh("web", "echo next").stdout == b"next\n"


def test_connections_that_never_authenticate_are_limited(g):
    held = []
    try:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            held.append(s)
        time.sleep(0.5)
        closed = 0
        for s in held:
            s.settimeout(0.5)
            try:
                data = s.recv(4096)
                # the gateway sends its banner first; a refused connection is closed right after
                if data and s.recv(4096) == b"":
                    closed += 1
                elif not data:
                    closed += 1
            except (TimeoutError, socket.timeout):
                pass
            except ConnectionResetError:
                closed += 1
        assert closed >= 12, closed  # max_unauthenticated = 8
    finally:
        for s in held:
            s.close()
    assert g.ssh("web", "echo next").stdout == b"next\n"
