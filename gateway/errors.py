"""User-facing errors: the CLI prints them as one line, never as a traceback."""


class WiregateError(Exception):
    """An error whose message is meant for the operator as it stands."""


class ConfigError(WiregateError):
    """A configuration that cannot be used; ``errors`` holds one line per problem, each led by its key path."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))
