"""Locale-aware formatting for templates (Babel), and template helpers."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask import Flask, g
from flask_babel import format_currency, format_date, format_datetime, format_decimal, get_locale

from saas import web
from saas.auth.models import Role


def money(amount: Decimal | int | None, currency: str | None = None) -> str:
    """An amount in the tenant's currency, formatted for the user's locale."""
    if amount is None:
        return ""
    tenant = g.get("tenant")
    return format_currency(Decimal(amount), currency or (tenant.currency if tenant else "CNY"))


def number(value) -> str:
    return format_decimal(value)


def date(value: dt.date | None, fmt: str = "medium") -> str:
    return format_date(value, fmt) if value else ""


def datetime(value: dt.datetime | None, fmt: str = "medium") -> str:
    return format_datetime(value, fmt) if value else ""


def locale_code() -> str:
    """The user's language as one of our codes: "zh_CN" or "en" (Babel may add a script)."""
    locale = get_locale()
    return "zh_CN" if locale is not None and locale.language == "zh" else "en"


def localized(entry) -> str:
    """The name of a coded entry (location, department, kind, tier) in the user's language."""
    if entry is None:
        return ""
    return entry.name_for(locale_code())


def register(app: Flask) -> None:
    from saas import LANGUAGES

    app.jinja_env.filters.update(money=money, number=number, date=date, datetime=datetime, localized=localized)
    app.jinja_env.globals.update(
        has_role=web.has_role, Role=Role, LANGUAGES=LANGUAGES,
        current_tenant=web.current_tenant, current_membership=web.current_membership,
        get_locale=get_locale, locale_code=locale_code,
    )
