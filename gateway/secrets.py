"""Target credentials: read when needed, hard to leak by accident.

The config only names where a secret lives (an environment variable or a file);
the value is read at call time so that rotating it needs no restart, and it is
wrapped in ``Secret`` so that logging, repr or pickling a structure holding it
never prints it.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import TYPE_CHECKING, NoReturn

from gateway.errors import WiregateError

if TYPE_CHECKING:
    from gateway.config import Target

_MASK = "Secret('***')"


class Secret:
    """A secret string. Only ``reveal()`` gives the value back."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    # equal secrets must not be distinguishable through a hash either
    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return bool(self._value)

    # Pickling (and copy, which goes through the same protocol) would carry the
    # value into wherever the bytes end up: logs, caches, crash dumps.
    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled or copied; pass the Secret object itself")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self.__reduce__()

    def __getstate__(self) -> NoReturn:
        self.__reduce__()


def target_password(target: Target) -> Secret | None:
    """The target's password from ``password_env`` or ``password_file``, read now; None when neither is set.

    Errors name the variable or file, never the value.
    """
    return read_secret(f"target {target.name!r}", "password", target.password_env, target.password_file)


def target_credential(target: Target) -> Secret | None:
    """An http target's own credential (``credential_env`` / ``credential_file``): the whole value of
    its ``credential_header``; None when neither is set. A value that cannot be a header value
    (a line break, a NUL) is refused, so it cannot add headers of its own."""
    secret = read_secret(f"target {target.name!r}", "credential", target.credential_env, target.credential_file)
    if secret is not None and any(c in secret.reveal() for c in "\r\n\0"):
        raise WiregateError(f"target {target.name!r}: the credential holds a line break or NUL, "
                            "which a header value cannot")
    return secret


def read_secret(where: str, key: str, env: str | None, file: str | None) -> Secret | None:
    """A secret from the environment variable ``env`` or the file ``file`` (``KEY_env`` / ``KEY_file``)."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise WiregateError(f"{where}: {key}_env: environment variable {env} is not set")
        if value == "":
            raise WiregateError(f"{where}: {key}_env: environment variable {env} is empty")
        return Secret(value)
    if file:
        try:
            with open(file, encoding="utf-8") as f:
                value = f.read()
        except OSError as e:
            reason = e.strerror or type(e).__name__
            raise WiregateError(f"{where}: {key}_file: cannot read {file}: {reason}") from None
        except UnicodeDecodeError:
            raise WiregateError(f"{where}: {key}_file: {file} is not UTF-8 text") from None
        # editors and `echo` add one trailing newline; anything else is part of the secret
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
        if value == "":
            raise WiregateError(f"{where}: {key}_file: {file} is empty")
        return Secret(value)
    return None


async def target_password_async(target: Target) -> Secret | None:
    """``target_password`` for async code: the file read happens off the event loop."""
    if target.password_file and not target.password_env:
        return await asyncio.to_thread(target_password, target)
    return target_password(target)
