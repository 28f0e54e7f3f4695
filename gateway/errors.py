"""User-facing errors: the CLI prints them as one line, never as a traceback."""


class WiregateError(Exception):
    """An error whose message is meant for the operator as it stands."""


class ConfigError(WiregateError):
    """A configuration that cannot be used; ``errors`` holds one line per problem, each led by its key path."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def raised_at(exc: BaseException) -> str:
    """``file:line`` where ``exc`` was raised: what a log may say about a bug, since the
    exception's text may quote the data that was being handled."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
