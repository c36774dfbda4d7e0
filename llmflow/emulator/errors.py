"""API error bodies and the exception the emulator's handlers raise to send one."""

from __future__ import annotations

import json
from typing import Any, Final

#: HTTP status of each API error type.
STATUS: Final[dict[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class ApiError(Exception):
    """An error the emulator answers with, shaped like the API's."""

    def __init__(
        self,
        error_type: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = STATUS[error_type]
        self.headers = headers or {}
        self.details = details


def invalid(message: str) -> ApiError:
    """A 400 invalid_request_error."""
    return ApiError("invalid_request_error", message)


def not_found(message: str) -> ApiError:
    """A 404 not_found_error."""
    return ApiError("not_found_error", message)


def error_body(
    error_type: str,
    message: str,
    request_id: str | None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"[, "details"]}, "request_id"}``;
    ``details`` (e.g. ``{"error_code": ...}``) only when the error has one."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details is not None:
        error["details"] = details
    return {"type": "error", "error": error, "request_id": request_id}


def error_bytes(error: ApiError, request_id: str) -> bytes:
    """The JSON body of ``error`` as the API sends it."""
    body = error_body(error.error_type, error.message, request_id, error.details)
    return json.dumps(body).encode()
