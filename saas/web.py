"""Request lifecycle shared by every blueprint: who is acting for which tenant, the
access rule of each endpoint (deny by default), one transaction per request, and the
error pages."""
from __future__ import annotations

import logging
import uuid

from flask import (
    Flask,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session as flask_session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import IntegrityError

from saas import db
from saas.auth.models import Role, Tenant
from saas.errors import NotFound, ValidationFailed

log = logging.getLogger("huitou")

# Access levels an endpoint can declare with @access(...).
PUBLIC = "public"          # anyone, logged in or not
LOGIN = "login"            # a logged-in user, before a tenant is chosen
API = "api"                # a tenant API key (checked by the API blueprint)


def access(level: str | Role):
    """Declare who may call a view: PUBLIC, LOGIN, API, or a Role (that role or higher
    in the current tenant). A view without a declaration answers 403 to everyone."""
    level = level.value if isinstance(level, Role) else level

    def deco(view):
        view.huitou_access = level
        return view

    return deco


def access_level(app: Flask, endpoint: str) -> str | None:
    view = app.view_functions.get(endpoint)
    return getattr(view, "huitou_access", None)


def current_tenant() -> Tenant | None:
    return g.get("tenant")


def current_membership():
    return g.get("membership")


def has_role(role: str | Role) -> bool:
    m = g.get("membership")
    if m is None:
        return False
    role = Role(role.value if isinstance(role, Role) else role)
    return m.role_enum.rank >= role.rank


def _load_tenant() -> None:
    """Bind the request's session to the tenant the logged-in user chose, if the user
    still has an active membership there."""
    from saas.auth import services as auth_services

    if not current_user.is_authenticated:
        return
    s = db.session()
    db.bind_user(s, current_user.id)
    raw = flask_session.get("tenant_id")
    if not raw:
        # e.g. a session restored from a remember cookie: one business needs no choice
        memberships = auth_services.active_memberships(s, current_user.id)
        if len(memberships) == 1:
            raw = flask_session["tenant_id"] = str(memberships[0][0].tenant_id)
    if raw:
        try:
            tid = uuid.UUID(raw)
        except ValueError:
            tid = None
        m = auth_services.membership_for(s, current_user.id, tid) if tid else None
        if m is None:
            flask_session.pop("tenant_id", None)
            return
        db.bind_tenant(s, tid, current_user.id)
        g.membership = m
        g.tenant = s.get(Tenant, tid)


def _before_request():
    if request.endpoint is None:
        return None  # routing failed: the 404/405 handlers answer
    level = access_level(current_app, request.endpoint)
    if request.endpoint == "static":
        return None
    if level is None:
        abort(403)
    if level == API:
        return None  # the API blueprint authenticates by key; browser cookies play no part
    if level == PUBLIC:
        _load_tenant()
        return None
    if not current_user.is_authenticated:
        if request.headers.get("HX-Request"):
            resp = current_app.response_class(status=401)
            resp.headers["HX-Redirect"] = url_for("auth.login")
            return resp
        return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
    _load_tenant()
    if level == LOGIN:
        return None
    if g.get("membership") is None:
        return redirect(url_for("auth.choose_tenant"))
    if not has_role(level):
        abort(403)
    return None


def _after_request(response):
    s = g.get("db_session")
    if s is not None:
        if response.status_code < 400:
            s.commit()
        else:
            s.rollback()
    response.headers.setdefault("Vary", "HX-Request")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


# The place a front-desk tablet works at: the location of the last visit or redemption
# recorded on this device, preselected in the next form (a tablet stays at its desk).
TABLET_LOCATION_COOKIE = "huitou_location"


def tablet_location() -> str:
    """The code of the location this device last recorded at ("" when none)."""
    return request.cookies.get(TABLET_LOCATION_COOKIE, "")


def preselected_location(locations: list, customer=None):
    """The location a form preselects, of ``locations`` (entries with ``id`` and ``code``):
    this tablet's, else the only one, else the customer's; None."""
    here = tablet_location()
    for e in locations:
        if here and e.code == here:
            return e
    if len(locations) == 1:
        return locations[0]
    if customer is not None and customer.location_id:
        return next((e for e in locations if e.id == customer.location_id), None)
    return None


def remember_tablet_location(response, code: str):
    """Remember ``code`` as this device's location (a year and a bit); returns ``response``."""
    if code:
        response.set_cookie(TABLET_LOCATION_COOKIE, code, max_age=400 * 24 * 3600, httponly=True,
                            samesite="Lax", secure=request.is_secure)
    return response


def wants_json() -> bool:
    return request.path.startswith("/api/")


def json_error(status: int, code: str, message: str, details=None):
    body = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    return body, status


def register_lifecycle(app: Flask) -> None:
    app.before_request(_before_request)
    app.after_request(_after_request)

    @app.errorhandler(NotFound)
    def _not_found_domain(exc):
        return _render_error(404)

    @app.errorhandler(404)
    def _not_found(exc):
        return _render_error(404)

    @app.errorhandler(403)
    def _forbidden(exc):
        return _render_error(403)

    @app.errorhandler(405)
    def _method(exc):
        body, status = _render_error(405)
        return body, status, {"Allow": ", ".join(sorted(exc.valid_methods or []))}

    @app.errorhandler(413)
    def _too_large(exc):
        return _render_error(413)

    @app.errorhandler(CSRFError)
    def _csrf(exc):
        return _render_error(400, _("The form expired or did not come from this site. Reload the page and try again."))

    @app.errorhandler(400)
    def _bad_request(exc):
        return _render_error(400)

    @app.errorhandler(429)
    def _rate_limited(exc):
        if request.endpoint == "auth.login":
            from saas.auth.forms import LoginForm

            return render_template("auth/login.html", form=LoginForm(), rate_limited=True), 429
        return _render_error(429)

    @app.errorhandler(IntegrityError)
    def _conflict(exc):
        # Two requests saved the same unique value at the same moment; the checks in the
        # services passed for both, the database refused the second.
        s = g.get("db_session")
        if s is not None:
            s.rollback()
        log.warning("integrity error answered with 409: %s", exc.orig)
        return _render_error(409)

    @app.errorhandler(ValidationFailed)
    def _validation(exc):
        if wants_json():
            details = {k: [str(m) for m in v] for k, v in exc.errors.items()}
            return json_error(422, exc.code, _("The request has invalid values."), details)
        return _render_error(422, "; ".join(str(m) for v in exc.errors.values() for m in v))

    @app.errorhandler(Exception)
    def _unexpected(exc):
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return _render_error(exc.code or 500)
        ref = uuid.uuid4().hex[:12]
        log.exception("unhandled error, reference %s", ref)
        s = g.get("db_session")
        if s is not None:
            s.rollback()
        return _render_error(500, reference=ref)


ERROR_TEXTS = {
    400: ("bad_request", _l("The request could not be understood.")),
    401: ("unauthorized", _l("Log in or send valid credentials.")),
    403: ("forbidden", _l("Your role does not allow this.")),
    404: ("not_found", _l("There is nothing here.")),
    405: ("method_not_allowed", _l("This address does not accept that kind of request.")),
    409: ("conflict", _l("Someone else saved the same thing at the same moment. Reload the page and try again.")),
    413: ("too_large", _l("The upload is too large.")),
    415: ("unsupported_media_type", _l("Send the body as JSON (Content-Type: application/json).")),
    422: ("validation_failed", _l("The request has invalid values.")),
    429: ("rate_limited", _l("Too many attempts. Wait a while and try again.")),
    500: ("internal_error", _l("Something went wrong on our side.")),
}


def _render_error(status: int, message: str | None = None, reference: str | None = None):
    code, default = ERROR_TEXTS.get(status, ("error", _l("Something went wrong.")))
    text = str(message or default)
    if wants_json():
        body, st = json_error(status, code, text)
        if reference:
            body["error"]["reference"] = reference
        return body, st
    return render_template("errors/error.html", status=status, message=text, reference=reference), status
