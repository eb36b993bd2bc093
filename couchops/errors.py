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


class PartialFailure(OpsError):
    """Some of the run's items (databases) failed, the others were done: `counts` reports
    the whole run, failures included."""

    def __init__(self, message: str, counts: dict[str, float]) -> None:
        super().__init__(message)
        self.counts = counts


def describe(exc: BaseException) -> str:
    """One line for an error met while the run goes on: an operator's error as it reads, any
    other with its type (a defect to report)."""
    if isinstance(exc, OpsError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


class AuditFindings(PartialFailure):
    """Data older than the retention is readable: the audit did its work and found it."""

    exit_code = 4
