"""Small, reusable handling of the gateway's own signing keys.

Keys live under ``state_dir/keys``; the directory is 0700 and key files 0600.
Creation is race-safe across processes (``wiregate serve`` and
``wiregate token issue`` may both create the dev-token key at once): the key is
written to a private temp file and hard-linked into place, so a reader never
sees a half-written file and both processes end up with the same key.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.errors import WiregateError


def load_or_create_ed25519(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key at ``path`` (PEM, PKCS#8), created on first use."""
    path = Path(path)
    try:
        return _load_ed25519(path)
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    if not install_private_file(path, pem, "key"):
        return _load_ed25519(path)  # another process won the race: use its key so both agree
    return key


def install_private_file(path: Path, data: bytes, what: str) -> bool:
    """Put ``data`` at ``path`` (mode 0600, parent directory 0700 if created) unless a file is
    there already. Race-safe across processes: written to a private temporary file, then
    hard-linked into place. False when another process got there first (read its file).
    Errors are ``WiregateError`` naming ``what``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        ensure_private_dir(path.parent)
        _write_private(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            # file systems without hard links: exclusive create is the next best thing
            try:
                _write_private(path, data)
            except FileExistsError:
                return False
    except OSError as e:
        raise WiregateError(f"{path}: cannot create {what}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return True


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing; a directory created here is 0700."""
    path = Path(path)
    if path.is_dir():
        return
    try:
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)  # mkdir's mode is filtered by the umask
    except OSError as e:
        raise WiregateError(f"{path}: cannot create directory: {e.strerror or e}") from None


def ed25519_key_id(public_key: Ed25519PublicKey) -> str:
    """A short stable id of a public key (sha256 of its raw bytes, 16 hex chars), e.g. for a JWT ``kid``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _load_ed25519(path: Path) -> Ed25519PrivateKey:
    # FileNotFoundError propagates: the caller creates the key then
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise WiregateError(f"{path}: cannot read key: {e.strerror or e}") from None
    if os.name == "posix" and st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise WiregateError(f"{path}: private key is accessible by other users (mode {mode:04o}): "
                            f"run chmod 600 {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WiregateError(f"{path}: cannot read key: {e.strerror or e}") from None
    return ed25519_from_pem(data, str(path))


def ed25519_from_pem(data: bytes, where: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM; ``where`` names its source in the error."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise WiregateError(f"{where}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise WiregateError(f"{where}: expected an Ed25519 private key, found {type(key).__name__}")
    return key
