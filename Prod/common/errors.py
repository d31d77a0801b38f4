"""Domain errors raised by the shared package and the services.

Each API maps them to HTTP in one exception handler (see :mod:`Prod.common.api`), with a JSON body
that names what was wrong; jobs and commands print the message and exit non-zero.
"""

from __future__ import annotations


class RecoError(Exception):
    """Base class: ``message`` is shown to the user, ``details`` are extra JSON-able facts."""

    status_code = 500

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(RecoError):
    status_code = 422


class NotFound(RecoError):
    status_code = 404


class Conflict(RecoError):
    status_code = 409


class ModelNotReady(RecoError):
    """No published model (or the store holding it is unreachable)."""

    status_code = 503


class IngestError(RecoError):
    """An ingest job refused its input; nothing was written."""

    status_code = 422


class InfraError(RecoError):
    """A local server could not be started, reached or stopped."""

    status_code = 503


class TrainingError(RecoError):
    """Training produced unusable factors (e.g. not finite)."""


class InvalidJson(RecoError):
    """The request body is not (UTF-8) JSON."""

    status_code = 400


class Unauthorized(RecoError):
    """Missing or wrong ``X-API-Key``."""

    status_code = 401


class PayloadTooLarge(RecoError):
    """The request body is over ``MAX_REQUEST_BYTES``."""

    status_code = 413
