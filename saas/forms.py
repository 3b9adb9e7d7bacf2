"""Form pieces shared by every domain."""
from __future__ import annotations

import zoneinfo
from functools import lru_cache

from babel.numbers import get_currency_name
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from wtforms.validators import DataRequired, Length, ValidationError

COMMON_COUNTRIES = ("CN", "HK", "MO", "TW", "SG", "MY", "JP", "KR", "US", "GB", "DE", "FR", "AU", "CA")
COMMON_CURRENCIES = ("CNY", "HKD", "MOP", "TWD", "SGD", "MYR", "JPY", "KRW", "USD", "EUR", "GBP", "AUD", "CAD")


def required():
    return DataRequired(message=_l("This field is required."))


def max_len(n: int):
    return Length(max=n, message=_l("At most %(n)s characters.", n=n))


def no_markup(form, field):
    """Names are plain text: refuse angle brackets rather than store HTML."""
    if field.data and any(c in field.data for c in "<>"):
        raise ValidationError(_l("Use plain text: the characters < and > are not allowed."))


def add_errors(form, field: str, messages: list) -> None:
    """Show messages under a form field, or above the form when no field has that name."""
    target = form[field] if field and field in form else None
    if target is not None:
        target.errors = list(target.errors) + list(messages)
    else:
        form.form_errors.extend(messages)


def apply_errors(form, exc) -> None:
    """Show a service's ValidationFailed next to the form's fields (or above the form)."""
    for field, messages in exc.errors.items():
        add_errors(form, field, [str(m) for m in messages])


def _listed_choice(form, field):
    if field.data not in {str(c[0]) for c in field.choices or []}:
        raise ValidationError(_l("Choose one of the listed values."))


def listed() -> dict:
    """SelectField options: refuse a value that is not among the choices, with our message."""
    return {"validate_choice": False, "validators": [_listed_choice]}


@lru_cache(maxsize=1)
def timezones() -> tuple[str, ...]:
    return tuple(sorted(z for z in zoneinfo.available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))) + ["UTC"])


def timezone_choices() -> list[tuple[str, str]]:
    return [(z, z) for z in timezones()]


def country_choices() -> list[tuple[str, str]]:
    from babel import Locale

    names = Locale.parse("zh_CN" if (get_locale() and get_locale().language == "zh") else "en").territories
    return [(c, f"{names.get(c, c)} (+{_calling_code(c)})") for c in COMMON_COUNTRIES]


def _calling_code(region: str) -> int:
    import phonenumbers

    return phonenumbers.country_code_for_region(region)


def currency_choices() -> list[tuple[str, str]]:
    locale = get_locale() or "en"
    return [(c, f"{c} — {get_currency_name(c, locale=locale)}") for c in COMMON_CURRENCIES]
