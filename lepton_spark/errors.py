"""Exception types that map to the command line's exit codes (docs/architecture.md §5)."""

from __future__ import annotations


class LeptonError(Exception):
    """Base class: a failure with a clear one-line message. Exit code 1."""

    exit_code = 1


class UsageError(LeptonError):
    """Bad arguments or configuration. Exit code 2."""

    exit_code = 2


class InvalidInputError(LeptonError):
    """Input data is missing, unreadable or fails validation. Exit code 3."""

    exit_code = 3


class InvalidGraphError(InvalidInputError, ValueError):
    """A graph's data is unusable for the engine (ragged, null or non-finite features or weights).

    A ``ValueError`` for library callers, exit code 3 on the command line.
    """
