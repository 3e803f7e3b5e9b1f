"""The gateway's OpenAPI description (``GET /openapi.json``): what fuzzers and clients can rely
on. Request schemas name what the gateway itself requires; everything else passes through."""

from __future__ import annotations

from typing import Any

_ANTHROPIC_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["type", "error", "request_id"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "request_id": {"type": "string"},
    },
}

_OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_CONTENT: dict[str, Any] = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string"}},
            },
        },
    ]
}

_MESSAGES_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "max_tokens", "messages"],
    "properties": {
        "model": {
            "type": "string",
            "minLength": 1,
            "examples": ["auto", "haiku", "sonnet", "opus"],
        },
        "max_tokens": {"type": "integer", "minimum": 0},
        "stream": {"type": "boolean"},
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {"role": {"enum": ["user", "assistant"]}, "content": _CONTENT},
            },
        },
    },
    "additionalProperties": True,
}

_COUNT_REQUEST: dict[str, Any] = {
    **_MESSAGES_REQUEST,
    "required": ["model", "messages"],
}

_CHAT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "minLength": 1, "examples": ["auto", "haiku"]},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                    "content": {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "array"}]},
                },
            },
        },
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "stream": {"type": "boolean"},
        "temperature": {"type": "number"},
        "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    },
    "additionalProperties": True,
}


_FEEDBACK_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "score"],
    "properties": {
        "request_id": {"type": "string", "minLength": 1, "maxLength": 200},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "comment": {"type": "string", "maxLength": 4000},
    },
}


def _errors(schema: dict[str, Any], *codes: str) -> dict[str, Any]:
    return {
        code: {"description": "error", "content": {"application/json": {"schema": schema}}}
        for code in codes
    }


_ERR_CODES = ("400", "401", "404", "408", "413", "429", "500", "502", "504", "529")


def _post(
    summary: str, request: dict[str, Any], ok: dict[str, Any], errors: dict[str, Any]
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": {
                    "description": "answer",
                    "content": {"application/json": {"schema": ok}, "text/event-stream": {}},
                },
                **_errors(errors, *_ERR_CODES),
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    message = {"type": "object", "required": ["id", "type", "content", "model", "usage"]}
    completion = {"type": "object", "required": ["id", "object", "choices", "model"]}
    page = {"type": "object", "required": ["data"]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "tierwise gateway", "version": "1"},
        "paths": {
            "/v1/messages": _post(
                "Anthropic Messages, routed", _MESSAGES_REQUEST, message, _ANTHROPIC_ERROR
            ),
            "/v1/messages/count_tokens": _post(
                "Token count",
                _COUNT_REQUEST,
                {"type": "object", "required": ["input_tokens"]},
                _ANTHROPIC_ERROR,
            ),
            "/v1/chat/completions": _post(
                "OpenAI Chat Completions, routed", _CHAT_REQUEST, completion, _OPENAI_ERROR
            ),
            "/v1/models": {
                "get": {
                    "summary": "Virtual and configured models",
                    "responses": {
                        "200": {
                            "description": "models",
                            "content": {"application/json": {"schema": page}},
                        },
                        **_errors(_ANTHROPIC_ERROR, "401"),
                    },
                }
            },
            "/v1/feedback": {
                "post": {
                    "summary": "A user's judgement (0–1) of one answer, by its request id",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _FEEDBACK_REQUEST}},
                    },
                    "responses": {
                        "200": {
                            "description": "stored (a later judgement of the request replaces it)",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_errors(_ANTHROPIC_ERROR, "400", "401", "404", "429", "503"),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }
