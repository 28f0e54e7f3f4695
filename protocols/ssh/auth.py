"""Who an SSH caller is: user names, listed public keys, user certificates, tokens.

The SSH user name carries the target: ``TARGET`` (a public key or certificate proves who is
calling) or ``NAME@TARGET`` (NAME must be who the key, certificate or token proves). Target
names cannot hold ``@``, so the last ``@`` splits, and OIDC subjects that are e-mail addresses
work (``alice@example.com@web-1``).

Certificates: an OpenSSH user certificate signed by one of ``identity.ssh_ca_keys`` proves the
identity named by one of its principals, which must be an ``[[identity.users]]`` entry (its
groups are that entry's). asyncssh checks the signature, validity window, critical options and
``source-address``; each (CA, user) pair becomes one ``cert-authority`` authorized-keys line
whose private ``wiregate-user`` option names the identity it proves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncssh

from gateway.config import Config, UserAccount
from gateway.identity import Identity

# names usable inside an authorized_keys option value without quoting trouble
_PRINCIPAL_SAFE = re.compile(r'[^",\s\\]+')
IDENTITY_OPTION = "wiregate-user"


def parse_username(username: str) -> tuple[str | None, str]:
    """``NAME@TARGET`` -> (NAME, TARGET); ``TARGET`` -> (None, TARGET)."""
    name, at, target = username.rpartition("@")
    if not at:
        return None, username
    return name or None, target


def key_identity(user: UserAccount, method: str = "ssh-key") -> Identity:
    return Identity(name=user.name, groups=tuple(user.groups), method=method)  # type: ignore[arg-type]


class KeyIndex:
    """The public keys listed for identities (``identity.users[].ssh_keys``) and the CA keys."""

    def __init__(self, cfg: Config):
        self._by_key: dict[bytes, UserAccount] = {}
        for user in cfg.identity.users:
            for line in user.ssh_keys:
                key = asyncssh.import_public_key(line)
                self._by_key[key.public_data] = user
        self._users = {u.name: u for u in cfg.identity.users}
        lines = []
        for ca in cfg.identity.ssh_ca_keys:
            kind, blob = ca.split()[:2]
            for user in cfg.identity.users:
                if _PRINCIPAL_SAFE.fullmatch(user.name):
                    lines.append(f'cert-authority,principals="{user.name}",{IDENTITY_OPTION}="{user.name}" '
                                 f"{kind} {blob}")
        self.ca_lines: tuple[str, ...] = tuple(lines)

    def owner(self, key: asyncssh.SSHKey) -> UserAccount | None:
        return self._by_key.get(key.public_data)

    def authorized_cas(self) -> asyncssh.SSHAuthorizedKeys | None:
        """The CA entries for asyncssh, or None when no CA is configured."""
        return asyncssh.import_authorized_keys("\n".join(self.ca_lines) + "\n") if self.ca_lines else None

    def certificate_identity(self, option: object) -> Identity | None:
        """The identity a certificate proved, from the matched entry's ``wiregate-user`` option."""
        names: Sequence[str] = option if isinstance(option, (list, tuple)) else ()
        for name in names:
            user = self._users.get(name)
            if user is not None:
                return key_identity(user, "ssh-cert")
        return None
