"""Requests a client got wrong, answered in one plain sentence.

FastAPI answers a parameter that breaks its declared type or bounds with a 422 and a list of pydantic
errors. Every other bad input here is a 400 with ``{"detail": "<one sentence>"}`` (a bad query, an unknown
class, a broken upload), so parameters get the same: a 400 whose detail names the parameter and what it
may be, worded from the parameter's own OpenAPI schema (what /docs shows), e.g. "query parameter 'k' must
be a whole number from 1 to 200, not '0'". The schema documents these 400s in place of the 422s.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

ERROR = {
    "title": "Error",
    "type": "object",
    "properties": {"detail": {"type": "string", "description": "What is wrong, in one sentence."}},
    "required": ["detail"],
}
BAD_INPUT = {
    "description": "Bad input: the detail says which parameter and what it may be.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
SHOWN_CHARACTERS = 40  # a longer value is described by its length, not repeated


async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
    """The first validation error of a request as a 400 with one sentence."""
    error = exc.errors()[0]
    return JSONResponse({"detail": describe(error, _parameter_schema(request, error))}, status_code=400)


def describe(error: dict[str, Any], schema: dict[str, Any] | None) -> str:
    """One sentence for a pydantic error on a request parameter whose OpenAPI schema is `schema`."""
    where, name = (list(error.get("loc", ())) + ["request", "input"])[:2]
    subject = f"{where} parameter {str(name)!r}" if where in ("query", "path", "header") else f"the {where}"
    allowed = _allowed(schema) if schema else None
    if error.get("type") == "missing":
        return f"{subject} is required" + (f": {allowed}" if allowed else "")
    if allowed is None:
        return f"{subject} is not valid: {error.get('msg', 'unexpected value')}"
    return f"{subject} must be {allowed}, not {_shown(error.get('input'))}"


def _shown(value: object) -> str:
    text = str(value)
    return f"{len(text)} characters" if len(text) > SHOWN_CHARACTERS else repr(text)


def _allowed(schema: dict[str, Any]) -> str:
    """What a parameter schema allows, in words: 'a whole number from 1 to 200', "one of 'a' or 'b'"."""
    options = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"] or [schema]
    kind = options[0]
    if "enum" in kind:
        return "one of " + _either([repr(v) for v in kind["enum"]])
    if kind.get("type") == "string":
        low, high = kind.get("minLength", 0), kind.get("maxLength")
        if high is None:
            return f"text of at least {low} character{'s' * (low != 1)}"
        return f"text of {low} to {high} characters" if low else f"text of at most {high} characters"
    noun = {"integer": "a whole number", "number": "a number"}.get(kind.get("type"), "a value")
    return f"{noun} {_range(kind)}".strip()


def _range(schema: dict[str, Any]) -> str:
    """'from 1 to 200', 'above 0 and at most 1', 'at least 0'... from a number schema's bounds."""
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"from {_number(low)} to {_number(high)}"
    bounds = [
        f"{words} {_number(schema[key])}"
        for key, words in (
            ("minimum", "at least"),
            ("exclusiveMinimum", "above"),
            ("maximum", "at most"),
            ("exclusiveMaximum", "below"),
        )
        if key in schema
    ]
    return " and ".join(bounds)


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _parameter_schema(request: Request, error: dict[str, Any]) -> dict[str, Any] | None:
    """The OpenAPI schema of the parameter an error is about, from the matched route's operation."""
    route = request.scope.get("route")
    loc = error.get("loc", ())
    if route is None or len(loc) < 2:
        return None
    operation = request.app.openapi()["paths"].get(getattr(route, "path_format", ""), {})
    for parameter in operation.get(request.method.lower(), {}).get("parameters", []):
        if parameter["in"] == loc[0] and parameter["name"] == loc[1]:
            return parameter.get("schema")
    return None


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """The app's OpenAPI schema with each operation's 422 (validation errors) replaced by the 400 it gets."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault("400", BAD_INPUT)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components["Error"] = ERROR
    return schema
