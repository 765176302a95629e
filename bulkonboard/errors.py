"""Errors that stop a whole command; each carries the exit code of the contract and one line for a person.

A row that fails is not an error: it is a `RowResult` with status `invalid` or `failed`. These exceptions are
for what makes going on pointless (an unreadable file, a refused token, a journal held by another run). The
CLI turns any of them into one line on stderr and its exit code, never a traceback.

    BulkOnboardError
    ├── InputError              exit 2: unreadable or unusable input, bad arguments
    ├── ServiceUnavailable      exit 3: the service or sandbox cannot be reached
    ├── AuthError               exit 3: no credentials, a refused token, a missing role or consent
    ├── CustomerNotFound        exit 3: the customer is not the partner's (404 / 403 on the customer)
    ├── JournalBusy             exit 3: another run holds the journal
    └── OwnFailure              exit 4: bulkonboard could not finish its own work (results or journal not
                                writable, disk full, a damaged journal, a bug); what the service did is kept
"""

from __future__ import annotations


class BulkOnboardError(Exception):
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(BulkOnboardError):
    exit_code = 2


class ServiceUnavailable(BulkOnboardError):
    exit_code = 3


class AuthError(BulkOnboardError):
    exit_code = 3


class CustomerNotFound(BulkOnboardError):
    exit_code = 3


class JournalBusy(BulkOnboardError):
    exit_code = 3


class OwnFailure(BulkOnboardError):
    """Exit 4, never 1: exit 1 means "rows to fix", and a scheduler that treats it as success must not miss a
    night whose results or journal could not be written."""

    exit_code = 4


#: Exit codes of the contract, by meaning.
EXIT_OK = 0
EXIT_ROWS_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_AUTH_OR_CONNECTION = 3
EXIT_OWN_FAILURE = 4
EXIT_INTERRUPTED = 130
