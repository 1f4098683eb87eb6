"""The OpenAPI 3.0 document of the JSON API, kept by hand beside the routes it describes.

Served at /api/openapi.json; ``tests/test_schema.py`` runs schemathesis against it, so a route
and its description cannot drift apart unnoticed.
"""

from __future__ import annotations

import functools

from recsys.events import EVENT_WEIGHTS
from recsys.keys import USER_KEY_LENGTH
from recsys.recommend import STRATEGIES
from recsys.store import KEY_LENGTH
from recsys.strategies import REGISTRY
from web.params import MAX_BATCH_EVENTS, MAX_K

UPLOAD_DESCRIPTION = (
    "a JPEG, PNG, WebP, GIF, BMP or TIFF picture, up to 8 MB and 16 megapixels; its type is read "
    "from its bytes, whatever the part declares"
)


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


AUTH_ERRORS = {
    "401": _error("no token, or an unknown or revoked one (WWW-Authenticate: Bearer)"),
    "403": _error("the token's scope does not allow this"),
}
K = {
    "name": "k",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K},
    "description": "How many items.",
}
NULLABLE_TEXT = {"type": "string", "nullable": True}


@functools.cache
def document() -> dict:
    from recsys import __version__

    return {
        "openapi": "3.0.3",
        "info": {
            "title": "recsys",
            "version": __version__,
            "description": "More like your history: recommendations from image embeddings. "
            "Every endpoint but /api/health and this document needs 'Authorization: Bearer <token>' "
            "(`recsys token create NAME --scope read|write`).",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message", "status"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "status": {"type": "integer"},
                    },
                },
                "Item": {
                    "type": "object",
                    "required": ["item_id", "key", "score", "label", "title", "because"],
                    "properties": {
                        "item_id": {"type": "integer"},
                        "key": {"type": "string"},
                        "score": {"type": "number"},
                        "label": NULLABLE_TEXT,
                        "title": NULLABLE_TEXT,
                        "because": {**NULLABLE_TEXT, "description": "the history item it resembles"},
                    },
                },
                "Recommendations": {
                    "type": "object",
                    "required": ["user", "strategy", "cold_start", "history_size", "notes", "items"],
                    "properties": {
                        "user": {"type": "string"},
                        "request_id": {
                            "type": "string",
                            "description": "send it back with a click on one of its items (POST /api/events)",
                        },
                        "experiment": {**NULLABLE_TEXT, "description": "the experiment whose arm ranked it"},
                        "strategy": {
                            "type": "string",
                            "enum": list(REGISTRY),
                            "description": "the strategy that ranked the list",
                        },
                        "requested": {
                            "type": "string",
                            "enum": list(STRATEGIES),
                            "description": "what was asked for (auto: the evaluated best)",
                        },
                        "cold_start": {"type": "boolean"},
                        "history_size": {"type": "integer", "minimum": 0},
                        "notes": {"type": "array", "items": {"type": "string"}},
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                    },
                },
                "Similar": {
                    "type": "object",
                    "required": ["similar"],
                    "properties": {
                        "item": {"type": "string"},
                        "similar": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                    },
                },
                "Event": {
                    "type": "object",
                    "required": ["user", "item"],
                    "properties": {
                        "user": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": USER_KEY_LENGTH,
                            "description": "NFC, trimmed; no control, bidi or zero-width characters",
                        },
                        "item": {"type": "string", "minLength": 1, "maxLength": KEY_LENGTH},
                        "event": {"type": "string", "enum": list(EVENT_WEIGHTS)},
                        "at": {
                            "oneOf": [{"type": "string"}, {"type": "number"}],
                            "description": "ISO-8601 or Unix seconds, 1970 to one day ahead (default: now)",
                        },
                        "weight": {"type": "number", "minimum": 0, "maximum": 100},
                        "event_key": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 128,
                            "description": "idempotency key, unique per user",
                        },
                        "request_id": {
                            "type": "string",
                            "pattern": "^[A-Za-z0-9_-]{8,32}$",
                            "description": "the request_id of the list the event came from (a click)",
                        },
                    },
                },
                "Stored": {
                    "type": "object",
                    "required": ["stored", "duplicate"],
                    "properties": {"stored": {"type": "integer"}, "duplicate": {"type": "boolean"}},
                },
                "Events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH_EVENTS,
                    "items": {"$ref": "#/components/schemas/Event"},
                    "description": f"a batch: 1 to {MAX_BATCH_EVENTS} events, up to 1 MB, each "
                    "stored, a duplicate or refused on its own (one transaction)",
                },
                "Result": {
                    "type": "object",
                    "required": ["result"],
                    "properties": {
                        "result": {"type": "string", "enum": ["stored", "duplicate", "error"]},
                        "status": {
                            "type": "integer",
                            "enum": [400, 404, 409],
                            "description": "an error's status, as if the event had been sent alone",
                        },
                        "message": {"type": "string", "description": "what is wrong with the event"},
                    },
                },
                "BatchStored": {
                    "type": "object",
                    "required": ["stored", "duplicates", "errors", "results"],
                    "properties": {
                        "stored": {"type": "integer", "minimum": 0},
                        "duplicates": {"type": "integer", "minimum": 0},
                        "errors": {"type": "integer", "minimum": 0},
                        "results": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Result"},
                            "description": "one per event sent, in the order sent",
                        },
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "items", "embedded", "model"],
                    "properties": {
                        "status": {"type": "string"},
                        "items": {"type": "integer"},
                        "embedded": {"type": "integer"},
                        "model": {"type": "string"},
                    },
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/health": {
                "get": {
                    "summary": "Item and embedding counts (no token needed)",
                    "security": [],
                    "responses": {"200": _ok("the workspace is up", "Health")},
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document (no token needed)",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {}}}},
                }
            },
            "/api/users/{user}/recommendations": {
                "get": {
                    "summary": "Unseen items like the user's history, each with the item it resembles",
                    "parameters": [
                        {
                            "name": "user",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": USER_KEY_LENGTH},
                        },
                        K,
                        {
                            "name": "strategy",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(STRATEGIES)},
                        },
                    ],
                    "responses": {
                        "200": _ok("the list", "Recommendations"),
                        "400": _error("a bad k, strategy or user key"),
                        **AUTH_ERRORS,
                        "404": _error("unknown user"),
                        "429": _error("rate limit (Retry-After says when to come back)"),
                    },
                }
            },
            "/api/events": {
                "post": {
                    "summary": "Record what a user did (the user is created on first sight), "
                    "one event or a batch",
                    "description": "A JSON object is one event; a JSON array is a batch of up to "
                    f"{MAX_BATCH_EVENTS}, answered 200 with each event's result in order. The write "
                    "rate limit counts events: a batch of 1,000 costs 1,000.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Event"},
                                        {"$ref": "#/components/schemas/Events"},
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _ok("stored", "Stored"),
                        "200": {
                            "description": "one event: this user already has this event_key with this "
                            "payload; a batch: each event's result",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Stored"},
                                            {"$ref": "#/components/schemas/BatchStored"},
                                        ]
                                    }
                                }
                            },
                        },
                        "400": _error("malformed, or a batch of 0 or over 1,000 events"),
                        **AUTH_ERRORS,
                        "404": _error("unknown item"),
                        "409": _error("this user's event_key is stored with another payload"),
                        "413": _error("one event larger than 64 KB, a batch larger than 1 MB"),
                        "415": _error("not JSON"),
                        "429": _error("rate limit (Retry-After says when to come back)"),
                    },
                }
            },
            "/api/items/{key}/similar": {
                "get": {
                    "summary": "Items that look like this one",
                    "parameters": [
                        {
                            "name": "key",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": KEY_LENGTH},
                        },
                        K,
                    ],
                    "responses": {
                        "200": _ok("similar items", "Similar"),
                        "400": _error("a bad k"),
                        **AUTH_ERRORS,
                        "404": _error("unknown item"),
                        "429": _error("rate limit (Retry-After says when to come back)"),
                    },
                }
            },
            "/api/search": {
                "post": {
                    "summary": "Items that look like an uploaded picture",
                    "parameters": [K],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": {
                                            "type": "string",
                                            "format": "binary",
                                            "description": UPLOAD_DESCRIPTION,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _ok("similar items", "Similar"),
                        "400": _error("no picture, or a bad k"),
                        **AUTH_ERRORS,
                        "413": _error("more than 8 MB, or more pixels than the upload limit"),
                        "415": _error("not a JPEG, PNG, WebP, GIF, BMP or TIFF picture"),
                        "429": _error("rate limit"),
                        "503": _error("too many pictures being decoded; Retry-After"),
                    },
                }
            },
        },
    }
