"""The registry of API endpoints: one decorator registers the Flask route AND records the
operation for the OpenAPI 3.1 document, and request bodies are validated against the very
JSON Schemas (draft 2020-12, the dialect of OpenAPI 3.1) that the document publishes, so
the two cannot drift apart.

Adding an endpoint (in saas/api/views.py, or in a module that views.py imports)::

    CUSTOMER = api.schema("Customer", {"type": "object", ...})

    @api_route("/customers/<uuid:customer_id>", ["PUT"], "Replace one customer",
               request_schema=api.schema("CustomerInput", {...}), response_schema=CUSTOMER,
               success={200: "The customer was updated."})
    @access(API)
    def put_customer(customer_id, body):
        ...
        return customer_json(c), 200

The rules:

- ``@access(API)`` (a tenant key is needed) or ``@access(PUBLIC)`` goes *below*
  ``@api_route``: the registry reads it to mark the operation as secured or not, and
  refuses a view without it.
- A view with a ``request_schema`` receives the validated JSON body as the keyword
  argument ``body``. A body that is not JSON answers 415, one that does not parse 400,
  one that breaks the schema 422 with messages per field keyed by the dotted path into
  the body (``locations.0.code``); the view is not called then.
- ``api.schema(name, schema)`` puts a named schema under ``components/schemas`` and
  returns a ``{"$ref": ...}`` to it; use the ref anywhere in other schemas.
- ``api.explain_pattern(regex, message)`` gives the 422 message for a ``pattern`` that
  fails (a lazy gettext string; other keywords have generic messages).
- Summaries and descriptions are plain English: the document is for developers.
- Path parameters come from the rule itself (``<code>``, ``<uuid:id>``, ``<int:n>``);
  ``params`` adds descriptions or schemas to them, or declares query parameters.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
from typing import Any, Callable

from flask import Blueprint, Flask, request
from flask_babel import lazy_gettext as _l
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from saas.errors import ValidationFailed
from saas.web import API, PUBLIC

OPENAPI_VERSION = "3.1.0"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
COMPONENT_REF = "#/components/schemas/"

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code, e.g. validation_failed."},
                "message": {"type": "string", "description": "What went wrong, in the request's language."},
                "details": {
                    "type": "object",
                    "description": "Messages per field; the key is the dotted path into the request "
                                   "body (locations.0.code), or empty for the body as a whole.",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
                "reference": {"type": "string", "description": "Quote this when reporting a 500."},
            },
        }
    },
}

# (status, component name, description) of the error answers the document lists.
ERROR_RESPONSES = {
    400: ("BadRequest", "The body is not valid JSON, or the Idempotency-Key header is missing or malformed."),
    401: ("Unauthorized", "No API key, or one that is unknown or revoked."),
    404: ("NotFound", "No such object in this tenant, or no such address."),
    409: ("Conflict", "The Idempotency-Key was used before with another request (idempotency_key_reused)."),
    415: ("UnsupportedMediaType", "The body is not sent as application/json."),
    422: ("ValidationFailed", "The body or a query parameter has invalid values; details name each field."),
    429: ("RateLimited", "Too many requests; wait and retry."),
}


class ApiError(Exception):
    """An answer other than success that the API gives on purpose (401, 400, 415).

    The blueprint renders it as the standard error JSON with ``headers``.
    """

    def __init__(self, status: int, code: str, message, headers: dict[str, str] | None = None):
        super().__init__(code)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclasses.dataclass
class Operation:
    endpoint: str
    rule: str
    methods: tuple[str, ...]
    summary: str
    description: str | None
    request_schema: dict | None
    response_schema: dict | None
    success: dict[int, str]
    params: dict[str, dict]
    tags: list[str]
    secured: bool


_RULE_ARG = re.compile(r"<(?:(?P<conv>[a-zA-Z_][a-zA-Z0-9_]*)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")
_CONVERTER_SCHEMAS = {
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "uuid": {"type": "string", "format": "uuid"},
}


def _openapi_path(rule: str) -> tuple[str, dict[str, dict]]:
    """``/a/<uuid:x>`` -> (``/a/{x}``, {"x": schema})."""
    args: dict[str, dict] = {}

    def repl(m: re.Match) -> str:
        args[m["name"]] = dict(_CONVERTER_SCHEMAS.get(m["conv"] or "", {"type": "string"}))
        return "{" + m["name"] + "}"

    return _RULE_ARG.sub(repl, rule), args


def _refs(node: Any):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


_TYPE_MESSAGES = {
    "string": _l("Must be text."),
    "boolean": _l("Must be true or false."),
    "integer": _l("Must be a whole number."),
    "number": _l("Must be a number."),
    "object": _l("Must be an object."),
    "array": _l("Must be a list."),
    "null": _l("Must be null."),
}


class ApiSpec:
    """Endpoints of one blueprint, their schemas, and the OpenAPI document made from them."""

    def __init__(self, blueprint: Blueprint, *, title: str, version: str, description: str = ""):
        self.blueprint = blueprint
        self.title = title
        self.version = version
        self.description = description
        self.operations: dict[str, Operation] = {}
        self.schemas: dict[str, dict] = {"Error": ERROR_SCHEMA}
        self.pattern_messages: dict[str, Any] = {}
        self._validators: dict[str, Draft202012Validator] = {}

    # --- schemas -------------------------------------------------------------------------

    def schema(self, name: str, schema: dict) -> dict:
        """Register a named schema under components/schemas; returns a $ref to it."""
        if name in self.schemas:
            raise ValueError(f"schema {name!r} is registered twice")
        Draft202012Validator.check_schema(schema)
        self.schemas[name] = schema
        return self.ref(name)

    @staticmethod
    def ref(name: str) -> dict:
        return {"$ref": COMPONENT_REF + name}

    def explain_pattern(self, pattern: str, message) -> None:
        """The 422 message for a string that does not match ``pattern``."""
        self.pattern_messages[pattern] = message

    # --- routes --------------------------------------------------------------------------

    def route(self, rule: str, methods: list[str], summary: str, *, request_schema: dict | None = None,
              response_schema: dict | None = None, params: dict[str, dict] | None = None,
              success: dict[int, str] | None = None, description: str | None = None,
              tags: list[str] | None = None, endpoint: str | None = None) -> Callable:
        """Decorator: register ``rule`` on the blueprint and record the operation.

        ``success`` maps each success status to its description (default ``{200: "OK"}``);
        all of them answer ``response_schema``. ``params`` maps a parameter name to
        OpenAPI parameter fields (``description``, ``schema``, ``in``, ``required``); path
        parameters need not be listed. ``endpoint`` defaults to the view's name.
        Raises TypeError at import time for a view without @access(API|PUBLIC) or a
        body schema on a method that has no body.
        """
        methods = tuple(m.upper() for m in methods)
        if request_schema is not None:
            if not set(methods) <= BODY_METHODS:
                raise TypeError(f"{rule}: a request body needs POST, PUT or PATCH, not {methods}")
            Draft202012Validator.check_schema(request_schema)
        if response_schema is not None:
            Draft202012Validator.check_schema(response_schema)

        def deco(view: Callable) -> Callable:
            level = getattr(view, "huitou_access", None)
            if level not in (API, PUBLIC):
                raise TypeError(f"{view.__name__}: put @access(API) or @access(PUBLIC) below @api_route")
            name = endpoint or view.__name__
            if name in self.operations:
                raise ValueError(f"API endpoint {name!r} is registered twice")
            path_args = _openapi_path(rule)[1]
            unknown = {p for p, spec in (params or {}).items()
                       if spec.get("in", "path" if p in path_args else "query") == "path" and p not in path_args}
            if unknown:
                raise TypeError(f"{rule}: path parameters {sorted(unknown)} are not in the rule")
            op = Operation(
                endpoint=name, rule=rule, methods=methods, summary=summary, description=description,
                request_schema=request_schema, response_schema=response_schema,
                success=dict(success or {200: "OK"}), params=dict(params or {}),
                tags=list(tags or [rule.strip("/").split("/")[0] or "api"]),
                secured=level == API,
            )
            target = view
            if request_schema is not None:
                @functools.wraps(view)
                def with_body(**kwargs):
                    return view(body=self.read_body(op), **kwargs)

                target = with_body
            self.blueprint.add_url_rule(rule, name, target, methods=list(methods))
            self.operations[name] = op
            return view

        return deco

    # --- request bodies ------------------------------------------------------------------

    def read_body(self, op: Operation) -> Any:
        """The request's JSON body, valid against ``op.request_schema``.

        Raises ApiError (415 not JSON, 400 does not parse) or ValidationFailed (422).
        """
        if not request.is_json:
            raise ApiError(415, "unsupported_media_type",
                           _l("Send the body as JSON, with the header Content-Type: application/json."))
        try:
            body = json.loads(request.get_data(cache=True), parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            raise ApiError(400, "bad_json", _l("The body is not valid JSON.")) from None
        errors: dict[str, list] = {}
        for path in sorted(_unstorable_strings(body)):
            # NUL and lone surrogates parse as JSON but no database column takes them.
            errors.setdefault(".".join(path), []).append(_l("This text contains characters that cannot be stored."))
        for error in sorted(self._validator(op).iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
            for field, message in self._messages(error):
                if message not in errors.setdefault(field, []):
                    errors[field].append(message)
        if errors:
            raise ValidationFailed(errors)
        return body

    def _validator(self, op: Operation) -> Draft202012Validator:
        v = self._validators.get(op.endpoint)
        if v is None:
            self.check_refs()
            # The components ride along in the root so "#/components/schemas/..." resolves
            # exactly as it does in the published document.
            root = {**op.request_schema, "components": {"schemas": self.schemas}}
            v = self._validators[op.endpoint] = Draft202012Validator(root)
        return v

    def _messages(self, error: ValidationError):
        path = [str(p) for p in error.absolute_path]
        field = ".".join(path)
        kw, value = error.validator, error.validator_value
        if kw == "required":
            present = error.instance if isinstance(error.instance, dict) else {}
            for name in value:
                if name not in present:
                    yield ".".join(path + [name]), _l("This field is required.")
            return
        if kw == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            for name in error.instance:
                if name not in known:
                    yield ".".join(path + [str(name)]), _l("This field is not known.")
            return
        if kw == "type":
            first = value[0] if isinstance(value, list) else value
            yield field, _TYPE_MESSAGES.get(first, _l("This value has the wrong type."))
        elif kw == "minLength" and value == 1:
            yield field, _l("This field is required.")
        elif kw == "minLength":
            yield field, _l("At least %(n)s characters.", n=value)
        elif kw == "maxLength":
            yield field, _l("At most %(n)s characters.", n=value)
        elif kw == "pattern":
            yield field, self.pattern_messages.get(value, _l("This value does not have the expected form."))
        elif kw == "minItems":
            yield field, _l("At least %(n)s entries.", n=value)
        elif kw == "maxItems":
            yield field, _l("At most %(n)s entries.", n=value)
        elif kw == "enum":
            yield field, _l("Use one of: %(values)s.", values=", ".join(json.dumps(v, ensure_ascii=False) for v in value))
        elif kw in ("minimum", "exclusiveMinimum"):
            yield field, _l("Must be at least %(n)s.", n=value)
        elif kw in ("maximum", "exclusiveMaximum"):
            yield field, _l("Must be at most %(n)s.", n=value)
        else:
            yield field, _l("This value is not allowed.")

    # --- the document --------------------------------------------------------------------

    def check_refs(self) -> None:
        """Raise ValueError when a schema refers to a component that is not registered."""
        for ref in _refs([self.schemas] + [[o.request_schema, o.response_schema] for o in self.operations.values()]):
            if not ref.startswith(COMPONENT_REF) or ref[len(COMPONENT_REF):] not in self.schemas:
                raise ValueError(f"unresolvable $ref {ref!r} in the API schemas")

    def document(self, app: Flask) -> dict:
        """The OpenAPI 3.1 document of every registered operation, with the paths as
        ``app.url_map`` has them (prefix included)."""
        self.check_refs()
        paths: dict[str, dict] = {}
        prefix = self.blueprint.name + "."
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
            if not rule.endpoint.startswith(prefix):
                continue
            op = self.operations.get(rule.endpoint[len(prefix):])
            if op is None:
                continue  # a route added without the registry: tests/test_api.py refuses it
            path, path_args = _openapi_path(rule.rule)
            methods = [m for m in op.methods if m in rule.methods]
            for method in methods:
                operation_id = op.endpoint if len(methods) == 1 else f"{op.endpoint}_{method.lower()}"
                paths.setdefault(path, {})[method.lower()] = self._operation(op, operation_id, path_args)
        responses = {
            name: {"description": desc, "content": {"application/json": {"schema": self.ref("Error")}}}
            for name, desc in ERROR_RESPONSES.values()
        }
        responses["Unauthorized"]["headers"] = {
            "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}
        responses["Error"] = {"description": "Any other error (405, 413, 500).",
                              "content": {"application/json": {"schema": self.ref("Error")}}}
        doc: dict[str, Any] = {
            "openapi": OPENAPI_VERSION,
            "info": {"title": self.title, "version": self.version},
            "paths": paths,
            "components": {
                "schemas": copy.deepcopy(self.schemas),
                "responses": responses,
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer",
                               "description": "A tenant API key: Authorization: Bearer htk_..."},
                },
            },
            "security": [{"bearer": []}],
        }
        if self.description:
            doc["info"]["description"] = self.description
        return doc

    def _operation(self, op: Operation, operation_id: str, path_args: dict[str, dict]) -> dict:
        out: dict[str, Any] = {"operationId": operation_id, "summary": op.summary, "tags": op.tags}
        if op.description:
            out["description"] = op.description
        parameters = []
        for name, schema in path_args.items():
            extra = op.params.get(name, {})
            parameters.append({"name": name, "in": "path", "required": True,
                               "schema": extra.get("schema", schema),
                               **({"description": extra["description"]} if "description" in extra else {})})
        for name, extra in op.params.items():
            if name in path_args:
                continue
            parameters.append({"name": name, "in": extra.get("in", "query"),
                               "required": bool(extra.get("required", False)),
                               "schema": extra.get("schema", {"type": "string"}),
                               **({"description": extra["description"]} if "description" in extra else {})})
        if parameters:
            out["parameters"] = parameters
        if op.request_schema is not None:
            out["requestBody"] = {"required": True,
                                  "content": {"application/json": {"schema": op.request_schema}}}
        responses: dict[str, Any] = {}
        for status, desc in sorted(op.success.items()):
            r: dict[str, Any] = {"description": desc}
            if op.response_schema is not None:
                r["content"] = {"application/json": {"schema": op.response_schema}}
            responses[str(status)] = r
        errors = [429]
        if op.secured:
            errors.append(401)
        if path_args:
            errors.append(404)
        if op.request_schema is not None:
            errors += [400, 415, 422]
        if any(extra.get("in") == "header" and name.lower() == "idempotency-key" for name, extra in op.params.items()):
            errors += [400, 409]
        if any(extra.get("in", "query") == "query" for name, extra in op.params.items() if name not in path_args):
            errors.append(422)
        for status in sorted(set(errors)):
            responses[str(status)] = {"$ref": "#/components/responses/" + ERROR_RESPONSES[status][0]}
        responses["default"] = {"$ref": "#/components/responses/Error"}
        out["responses"] = responses
        if not op.secured:
            out["security"] = []
        return out


def _unstorable_strings(body: Any) -> list[list[str]]:
    """Paths of the strings in a parsed JSON body that hold NUL or a lone surrogate (for a
    bad object key, the object's path). Iterative: a deeply nested body is no problem."""
    found: list[list[str]] = []
    stack: list[tuple[Any, list[str]]] = [(body, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node or not _encodable(node):
                found.append(path)
        elif isinstance(node, dict):
            for k, v in node.items():
                if "\x00" in k or not _encodable(k):
                    found.append(path)
                else:
                    stack.append((v, path + [k]))
        elif isinstance(node, list):
            stack.extend((v, path + [str(i)]) for i, v in enumerate(node))
    return found


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")
