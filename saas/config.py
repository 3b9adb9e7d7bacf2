"""Settings from environment variables."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """Raised when the app cannot start safely with the given environment."""


def load_config(overrides: dict | None = None) -> dict:
    """Build the Flask config from defaults, then the environment, then ``overrides``.

    Raises ConfigError in production (``HUITOU_ENV=production``) without a SECRET_KEY:
    a random per-process key would log users out on every restart and differ between
    gunicorn workers.
    """
    env = os.environ
    instance = ROOT / "instance"
    cfg: dict = {
        "ENV_NAME": env.get("HUITOU_ENV", "development"),
        "SECRET_KEY": env.get("SECRET_KEY"),
        "DATABASE_URL": env.get("DATABASE_URL", f"sqlite:///{instance / 'huitou.db'}"),
        # PostgreSQL: the migrations may run as the table owner while the app connects
        # as a role that is subject to row-level security.
        "MIGRATION_DATABASE_URL": env.get("MIGRATION_DATABASE_URL"),
        "DATABASE_APP_ROLE": env.get("DATABASE_APP_ROLE"),
        "BABEL_DEFAULT_LOCALE": "zh_CN",
        "BABEL_DEFAULT_TIMEZONE": "UTC",
        # The catalog folder is "zh": Babel names the locale zh_Hans_CN and falls back to "zh".
        "BABEL_TRANSLATION_DIRECTORIES": str(Path(__file__).parent / "translations"),
        "WTF_CSRF_TIME_LIMIT": None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": env.get("SESSION_COOKIE_SECURE", "0") == "1",
        "REMEMBER_COOKIE_SECURE": env.get("SESSION_COOKIE_SECURE", "0") == "1",
        "RATELIMIT_STORAGE_URI": env.get("RATELIMIT_STORAGE_URI", "memory://"),
        "RATELIMIT_HEADERS_ENABLED": False,
        "LOGIN_FAILURES_PER_ACCOUNT": env.get("LOGIN_FAILURES_PER_ACCOUNT", "100 per hour"),
        # One budget per API key across the whole API; empty turns it off.
        "API_RATE_LIMIT": env.get("API_RATE_LIMIT", "600 per minute"),
        "LOGIN_FAILURES_PER_IP": env.get("LOGIN_FAILURES_PER_IP", "300 per hour"),
        "MAIL_SERVER": env.get("MAIL_SERVER"),
        "MAIL_PORT": int(env.get("MAIL_PORT", "587")),
        "MAIL_USERNAME": env.get("MAIL_USERNAME"),
        "MAIL_PASSWORD": env.get("MAIL_PASSWORD"),
        "MAIL_USE_TLS": env.get("MAIL_USE_TLS", "1") == "1",
        "MAIL_FROM": env.get("MAIL_FROM", "Huitou <no-reply@localhost>"),
        "PASSWORD_RESET_MAX_AGE": 3600,
        "INVITATION_MAX_AGE_DAYS": 7,
        "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
    }
    if overrides:
        cfg.update(overrides)
    if not cfg["SECRET_KEY"]:
        if cfg["ENV_NAME"] == "production":
            raise ConfigError("SECRET_KEY must be set when HUITOU_ENV=production")
        cfg["SECRET_KEY"] = "dev-only-not-secret"
    return cfg
