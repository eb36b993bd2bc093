"""Errors that end a run with a one-line reason and a non-zero exit code."""


class OpsError(Exception):
    """A failure an operator can act on; its message is the one line printed on exit."""

    exit_code = 1


class SettingsError(OpsError):
    """A setting is missing, malformed or outside what is allowed."""

    exit_code = 2


class CouchError(OpsError):
    """CouchDB refused a request or could not be reached."""

    exit_code = 3

    def __init__(self, message: str, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


class VerificationError(OpsError):
    """What was written does not match what was expected (counts or checksums)."""

    exit_code = 4
