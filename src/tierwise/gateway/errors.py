"""Errors in each dialect's exact shape. The only place gateway errors become HTTP responses."""

from __future__ import annotations

import orjson
from starlette.responses import Response

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_OPENAI_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "request_too_large": "invalid_request_error",
    "rate_limit_error": "rate_limit_error",
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "timeout_error": "server_error",
    "connection_error": "server_error",
}


class GatewayError(Exception):
    """A request the gateway answers with an error (status, Anthropic error type, message)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _ANTHROPIC_TYPES.get(status, "api_error")
        self.param = param
        self.headers = headers or {}


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def anthropic_error_body(error_type: str, message: str, request_id: str) -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
    )


def openai_error_body(error_type: str, message: str, param: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": _OPENAI_TYPES.get(error_type, error_type),
                "param": param,
                "code": error_type,
            }
        }
    )


def error_response(exc: GatewayError, dialect: str, request_id: str) -> Response:
    if dialect == "openai":
        body = openai_error_body(exc.error_type, exc.message, exc.param)
    else:
        body = anthropic_error_body(exc.error_type, exc.message, request_id)
    headers = {"x-tierwise-request-id": request_id, "request-id": request_id, **exc.headers}
    return Response(body, status_code=exc.status, media_type="application/json", headers=headers)
