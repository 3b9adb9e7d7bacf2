"""JSON API v1 for other systems (PMS, DMS, POS), authenticated by a tenant API key.

Every request names its tenant only through ``Authorization: Bearer htk_<tenant>_<secret>``;
the blueprint's before_request checks the key against that tenant and binds the request's
session to it. Endpoints are declared with ``api_route`` (saas/api/spec.py), which also
builds the OpenAPI document served at /api/v1/openapi.json and validates request bodies
against the same schemas. Errors are always ``{"error": {"code", "message", "details"?}}``.
"""
from __future__ import annotations

import hashlib
import math

from flask import Blueprint, current_app, g, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException

from saas import LANGUAGES, clock, db
from saas.api.spec import ApiError, ApiSpec
from saas.auth.models import INDUSTRIES, Tenant
from saas.errors import NotFound, ValidationFailed
from saas.extensions import limiter
from saas.settings import services
from saas.web import API, PUBLIC, access, access_level, json_error

bp = Blueprint("api", __name__, url_prefix="/api/v1")

api = ApiSpec(
    bp, title="Huitou API", version="1",
    description=(
        "Push and read a tenant's data from another system. Authenticate every request with "
        "`Authorization: Bearer <API key>` (keys are created per tenant by its owner). Errors "
        "are JSON: `{\"error\": {\"code\", \"message\", \"details\"}}`; `message` and `details` "
        "are in the language of the Accept-Language header (zh-CN or en), else the tenant's."
    ),
)
# Later endpoints: declare them with this decorator (see saas/api/spec.py for the rules).
api_route = api.route

DEFAULT_RATE_LIMIT = "600 per minute"


# --- authentication, rate limit, errors --------------------------------------------------

def _bearer_token() -> str | None:
    parts = request.headers.get("Authorization", "").split()
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1]
    return None


def _rate_key() -> str:
    # Per presented key (hashed: the key itself must not sit in the limiter's storage);
    # requests without one share their address's budget.
    token = _bearer_token()
    if token:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "ip:" + get_remote_address()


# One budget per key for the whole API (a shared limit), not one per endpoint.
limiter.shared_limit(lambda: current_app.config.get("API_RATE_LIMIT", DEFAULT_RATE_LIMIT),
                     scope="api", key_func=_rate_key)(bp)


def _missing_key() -> ApiError:
    return ApiError(401, "unauthorized", _l("Send an API key in the header Authorization: Bearer <key>."),
                    {"WWW-Authenticate": "Bearer"})


@bp.url_value_preprocessor
def _refuse_nul_in_address(endpoint, values):
    # No code or name holds NUL, and PostgreSQL refuses it in a query: not found.
    if values and any(isinstance(v, str) and "\x00" in v for v in values.values()):
        raise NotFound("address")


@bp.before_request
def _authenticate():
    if access_level(current_app, request.endpoint) != API:
        return None  # the OpenAPI document is public
    # Idempotent writes look up the key, the tenant and what they need before they write
    # (saas/api/idempotency.py begin_effect): on SQLite only their writes hold the lock.
    view = current_app.view_functions.get(request.endpoint)
    s = db.session(reads_first=getattr(view, "huitou_reads_first", False))
    token = _bearer_token()
    if token is None:
        raise _missing_key()
    tenant_id = services.tenant_of_key(token)
    found = None
    if tenant_id is not None:
        db.bind_tenant(s, tenant_id)
        found = services.api_key_and_tenant(s, token)
    if found is None:
        db.bind_tenant(s, None)
        raise ApiError(401, "invalid_key", _l("The API key is unknown or has been revoked."),
                       {"WWW-Authenticate": 'Bearer error="invalid_token"'})
    g.api_key_id, g.tenant = found  # the tenant as a read-only row (services.api_key_and_tenant)
    return None


@bp.after_request
def _no_store(response):
    if access_level(current_app, request.endpoint) == API:
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    body, status = json_error(exc.status, exc.code, str(exc.message))
    return body, status, exc.headers


# saas/web.py has no texts for these two (ERROR_TEXTS), so the API words them itself.
@bp.errorhandler(401)
def _unauthorized(exc):
    return _api_error(_missing_key())


@bp.errorhandler(415)
def _unsupported(exc):
    return _api_error(ApiError(415, "unsupported_media_type",
                               _l("Send the body as JSON, with the header Content-Type: application/json.")))


@bp.errorhandler(429)
def _rate_limited(exc: HTTPException):
    body, status = json_error(429, "rate_limited", _("Too many requests. Wait a moment and try again."))
    headers = {}
    current = limiter.current_limit
    if current is not None:
        headers["Retry-After"] = str(max(1, math.ceil(current.reset_at - clock.now_utc().timestamp())))
    return body, status, headers


# --- the OpenAPI document ----------------------------------------------------------------

@api_route("/openapi.json", ["GET"], "This OpenAPI document", tags=["meta"],
           response_schema={"type": "object", "description": "An OpenAPI 3.1 document."})
@access(PUBLIC)
def openapi():
    return api.document(current_app)


# --- the tenant --------------------------------------------------------------------------

TENANT = api.schema("Tenant", {
    "type": "object",
    "required": ["name", "slug", "industry", "language", "currency", "timezone"],
    "properties": {
        "name": {"type": "string"},
        "slug": {"type": "string"},
        "industry": {"type": "string", "enum": list(INDUSTRIES)},
        "language": {"type": "string", "enum": list(LANGUAGES)},
        "currency": {"type": "string", "description": "ISO 4217 code, e.g. CNY."},
        "timezone": {"type": "string", "description": "IANA time zone, e.g. Asia/Shanghai."},
    },
})


@api_route("/tenant", ["GET"], "The tenant the key belongs to", response_schema=TENANT)
@access(API)
def get_tenant():
    t: Tenant = g.tenant
    return {"name": t.name, "slug": t.slug, "industry": t.industry, "language": t.language,
            "currency": t.currency, "timezone": t.timezone}


# --- coded lists: locations and departments ----------------------------------------------

CODE = {"type": "string", "pattern": services.CODE_RE.pattern,
        "description": "Stable identifier: 1 to 40 lower-case letters, digits and hyphens."}
api.explain_pattern(services.CODE_RE.pattern,
                    services.CODE_RULE)
NAME = {"type": "string", "minLength": 1, "maxLength": 120}
MAX_LIST = 1000


def _coded_list(kind: str, singular: str, title: str, extra: dict[str, dict]) -> None:
    """Register GET/PUT on /<kind> and GET/PUT on /<kind>/<code> for one editable list of
    saas.settings (``extra``: the fields the kind has besides code, names and active)."""
    cap = singular.capitalize()
    entry = api.schema(cap, {
        "type": "object",
        "required": ["code", "name_zh", "name_en", "active", "position", *extra],
        "properties": {"code": CODE, "name_zh": {"type": "string"}, "name_en": {"type": "string"},
                       **{k: {"type": v["type"]} for k, v in extra.items()},
                       "active": {"type": "boolean"}, "position": {"type": "integer"}},
    })
    editable = {"name_zh": NAME, "name_en": NAME, **extra,
                "active": {"type": "boolean", "description": "Default true."}}
    entry_input = api.schema(cap + "Input", {
        "type": "object", "required": ["code", "name_zh", "name_en"], "additionalProperties": False,
        "properties": {"code": CODE, **editable},
    })
    entry_update = api.schema(cap + "Update", {
        "type": "object", "required": ["name_zh", "name_en"], "additionalProperties": False,
        "description": "The whole entry: omitted optional fields take their defaults. "
                       "A code in the body must equal the one in the address.",
        "properties": {"code": CODE, **editable},
    })
    listing = api.schema(cap + "List", {
        "type": "object", "required": [kind], "properties": {kind: {"type": "array", "items": entry}},
    })
    listing_input = api.schema(cap + "ListInput", {
        "type": "object", "required": [kind], "additionalProperties": False,
        "properties": {kind: {"type": "array", "items": entry_input, "maxItems": MAX_LIST}},
    })
    code_param = {"code": {"description": f"The {singular}'s code.", "schema": {"type": "string"}}}

    def as_json(e) -> dict:
        out = {"code": e.code, "name_zh": e.name_zh, "name_en": e.name_en, "active": e.active,
               "position": e.position}
        for k in extra:
            out[k] = getattr(e, k)
        return out

    @api_route(f"/{kind}", ["GET"], f"All {title}, inactive ones included", response_schema=listing,
               endpoint=f"list_{kind}", tags=[kind])
    @access(API)
    def list_view():
        return {kind: [as_json(e) for e in services.list_entries(db.session(), kind)]}

    @api_route(f"/{kind}", ["PUT"], f"Replace the {title}", request_schema=listing_input,
               response_schema=listing, endpoint=f"replace_{kind}", tags=[kind],
               description="Entries are matched by code: named ones are created or updated, "
                           "the others are deactivated (kept for history). All or nothing.")
    @access(API)
    def replace_view(body):
        try:
            entries = services.replace_entries(db.session(), kind, body[kind])
        except ValidationFailed as exc:
            # The service numbers the items; point the details into the body.
            raise ValidationFailed({f"{kind}.{k}" if k else kind: v for k, v in exc.errors.items()}) from None
        return {kind: [as_json(e) for e in entries]}

    @api_route(f"/{kind}/<code>", ["GET"], f"One {singular}", response_schema=entry,
               params=code_param, endpoint=f"get_{singular}", tags=[kind])
    @access(API)
    def get_view(code):
        return as_json(services.get_entry_by_code(db.session(), kind, code))

    @api_route(f"/{kind}/<code>", ["PUT"], f"Create or replace one {singular}", request_schema=entry_update,
               response_schema=entry, params=code_param, endpoint=f"put_{singular}", tags=[kind],
               success={200: f"The {singular} was updated.", 201: f"The {singular} was created."})
    @access(API)
    def put_view(code, body):
        s = db.session()
        if body.get("code", code) != code:
            raise ValidationFailed.one("code", _l("The code in the body must match the one in the address."))
        try:
            existing = services.get_entry_by_code(s, kind, code)
        except NotFound:
            existing = None
        obj = services.save_entry(s, kind, {**body, "code": code}, existing)
        if existing is not None:
            return as_json(obj), 200
        return as_json(obj), 201, {"Location": url_for(f"api.get_{singular}", code=obj.code)}


_coded_list("locations", "location", "locations",
            {"address": {"type": "string", "maxLength": 255, "description": "Default empty."}})
_coded_list("departments", "department", "departments", {})


from saas.api import customers  # noqa: E402,F401  (registers its endpoints on bp; imported last)
from saas.api import loyalty  # noqa: E402,F401  (the loyalty endpoints)
