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

from gateway.config import Config, Target, UserAccount
from gateway.identity import Identity, groups_match

# names usable inside an authorized_keys option value without quoting trouble
_PRINCIPAL_SAFE = re.compile(r'[^",\s\\]+')


def usable_in_keys(name: str) -> bool:
    """Whether an identity name can carry SSH keys and certificates (no quote, comma, space or
    backslash: it is written into an authorized-keys option)."""
    return _PRINCIPAL_SAFE.fullmatch(name) is not None
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
    """The public keys listed for identities (``identity.users[].ssh_keys``) and the CA keys, as
    asyncssh authorized-keys entries.

    Every entry carries the identity it proves in a private ``wiregate-user`` option, and a
    connection is given only the entries of identities that may use its target under the name
    it claims (``authorized``): whatever key or certificate asyncssh accepts then proves an
    eligible identity, named by the entry that matched (``matched``), with no state of the
    gateway's own carried between attempts.
    """

    def __init__(self, cfg: Config):
        self._by_key: dict[bytes, UserAccount] = {}
        self._users = {u.name: u for u in cfg.identity.users}
        self._lines: dict[str, list[str]] = {}
        cas = [ca.split()[:2] for ca in cfg.identity.ssh_ca_keys]
        for user in cfg.identity.users:
            if not usable_in_keys(user.name):
                continue  # `wiregate check` reports such names when they have keys or CAs exist
            lines = self._lines.setdefault(user.name, [])
            for line in user.ssh_keys:
                key = asyncssh.import_public_key(line)
                self._by_key[key.public_data] = user
                kind, blob = line.split()[:2]
                lines.append(f'{IDENTITY_OPTION}="{user.name}" {kind} {blob}')
            for kind, blob in cas:
                lines.append(f'cert-authority,principals="{user.name}",{IDENTITY_OPTION}="{user.name}" {kind} {blob}')
        self._cache: dict[tuple[str, str | None], asyncssh.SSHAuthorizedKeys | None] = {}

    def owner(self, key: asyncssh.SSHKey) -> UserAccount | None:
        return self._by_key.get(key.public_data)

    def authorized(self, target: Target, claimed: str | None) -> asyncssh.SSHAuthorizedKeys | None:
        """The entries of the identities allowed on ``target`` (and named ``claimed``, if given)."""
        cache_key = (target.name, claimed)
        if cache_key not in self._cache:
            lines = [line for name, entries in self._lines.items()
                     if (claimed is None or claimed == name)
                     and groups_match(self._users[name].groups, target.allow_groups)
                     for line in entries]
            self._cache[cache_key] = asyncssh.import_authorized_keys("\n".join(lines) + "\n") if lines else None
        return self._cache[cache_key]

    def matched(self, option: object, *, certificate: bool) -> Identity | None:
        """The identity the accepted entry names (its ``wiregate-user`` option)."""
        names: Sequence[str] = option if isinstance(option, (list, tuple)) else ()
        for name in names:
            user = self._users.get(name)
            if user is not None:
                return key_identity(user, "ssh-cert" if certificate else "ssh-key")
        return None
