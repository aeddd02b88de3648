"""The one error tree of skylift; library code raises these, the CLI and server map them.

SkyliftError                 base; ``exit_code`` is what the CLI exits with
 ├── SpecError               invalid job spec, CLI override or argument      (exit 2)
 ├── DataError               unreadable or invalid data source               (exit 2)
 ├── ModelNotFound           unknown model, version, alias, run or checkpoint (exit 2)
 ├── IntegrityError          an artifact's bytes do not match its manifest   (exit 1)
 ├── AuthError               missing, wrong or insufficient credentials      (exit 1)
 │    └── MasterKeyMissing   an encrypted model, and no master key given      (exit 2)
 └── Overloaded              the server's queue is full, retry later         (exit 1)
"""

from __future__ import annotations


class SkyliftError(Exception):
    """Base of every error skylift raises on purpose; its message is one user-facing line."""

    exit_code = 1


class SpecError(SkyliftError):
    """The job spec, an override or a command argument is invalid."""

    exit_code = 2


class DataError(SkyliftError):
    """A data source cannot be read or holds invalid values."""

    exit_code = 2


class ModelNotFound(SkyliftError):
    """A model, version, alias, run or checkpoint does not exist."""

    exit_code = 2


class IntegrityError(SkyliftError):
    """A stored file does not match the hash recorded for it."""


class AuthError(SkyliftError):
    """Credentials are missing, wrong, expired or lack the needed scope."""


class MasterKeyMissing(AuthError):
    """An encrypted model needs the master key and none was given: a missing input, so exit 2."""

    exit_code = 2


class Overloaded(SkyliftError):
    """Too much queued work; the caller should retry later."""
