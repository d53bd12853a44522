"""Error classes: each carries its exit code; the CLI maps them in one place.

Exit codes (docs/exit-codes.md): 0 success, 1 the operation failed, 2 bad usage or invalid
policy, 3 a check found a problem (corruption, failed drill, unhealthy status).
Anything that is not a DrtoolError is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHECK = 3


class DrtoolError(Exception):
    """An expected failure: one line for the user, no traceback."""

    exit_code = EXIT_FAILED


class UsageError(DrtoolError):
    exit_code = EXIT_USAGE


class PolicyError(UsageError):
    """The policy is invalid; `problems` lists every one as 'file: key: message'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class DatabaseError(DrtoolError):
    """The database could not be reached or a PostgreSQL tool failed."""


class StorageError(DrtoolError):
    """The object store failed. `retryable` tells transient faults (5xx, throttling, a connection
    refused, reset or stalled) from permanent ones (403, 404, a failed precondition); each store
    sets it where the fault is raised, and storage/retry.py retries by it alone."""

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class NotFound(StorageError):
    """The object (or bucket) does not exist."""


class RetainedByLock(StorageError):
    """The object is under S3 Object Lock retention and cannot be deleted yet."""

    def __init__(self, message: str, until=None):
        super().__init__(message)
        self.until = until


class PreconditionFailed(StorageError):
    """A conditional write lost: the object exists (if_absent) or changed (if_match)."""


class IdentityError(DrtoolError):
    """An identity or recipient is missing, unreadable or does not match."""


class IntegrityError(DrtoolError):
    """Stored data is damaged: hash mismatch, failed authentication, truncation."""

    exit_code = EXIT_CHECK


class CheckFailed(DrtoolError):
    """A check found a problem (row counts differ, a probe failed)."""

    exit_code = EXIT_CHECK
