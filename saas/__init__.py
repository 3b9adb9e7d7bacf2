"""Huitou (回头客): the application factory."""
from __future__ import annotations

import logging

from flask import Flask, g, has_request_context, request, session as flask_session
from flask_babel import lazy_gettext as _l

from saas.config import load_config
from saas.extensions import babel, csrf, database, htmx, limiter, login_manager

LANGUAGES = {"zh_CN": "中文", "en": "English"}


def select_locale() -> str:
    """The user's own choice, else the tenant's language, else the browser's."""
    from flask_login import current_user

    if not has_request_context():
        return "en"  # CLI and jobs speak English
    if request.path.startswith("/api/"):
        # API clients ask with Accept-Language, else get the tenant's language.
        best = request.accept_languages.best_match(["zh-CN", "zh", "en"])
        if best:
            return "en" if best == "en" else "zh_CN"
        tenant = g.get("tenant")
        return tenant.language if tenant is not None else "en"
    if current_user.is_authenticated and current_user.language in LANGUAGES:
        return current_user.language
    if flask_session.get("lang") in LANGUAGES:
        return flask_session["lang"]
    tenant = g.get("tenant")
    if tenant is not None and tenant.language in LANGUAGES:
        return tenant.language
    best = request.accept_languages.best_match(["zh-CN", "zh", "en"])
    return "en" if best == "en" else "zh_CN"


def select_timezone() -> str:
    tenant = g.get("tenant")
    return tenant.timezone if tenant is not None else "UTC"


def create_app(overrides: dict | None = None) -> Flask:
    """Create the app: config from the environment (then ``overrides``), extensions,
    blueprints and CLI commands."""
    app = Flask(__name__, template_folder="../templates", static_folder="static")
    app.config.update(load_config(overrides))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    database.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please log in to see this page.")
    login_manager.session_protection = "strong"

    from saas import web
    web.register_lifecycle(app)

    from saas.api.views import bp as api_bp
    from saas.auth.views import bp as auth_bp
    from saas.customers.import_views import bp as imports_bp
    from saas.customers.records_views import bp as records_bp
    from saas.customers.views import bp as customers_bp
    from saas.dashboard.views import bp as dashboard_bp
    from saas.loyalty.web import bp as loyalty_bp
    from saas.settings.views import bp as settings_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(dashboard_bp)
    app.register_blueprint(settings_bp)
    app.register_blueprint(customers_bp)
    app.register_blueprint(records_bp)
    app.register_blueprint(imports_bp)
    app.register_blueprint(loyalty_bp)
    app.register_blueprint(api_bp)
    csrf.exempt(api_bp)

    from saas import formatting
    formatting.register(app)

    from saas.cli import register_cli
    register_cli(app)
    return app
