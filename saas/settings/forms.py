"""Forms of the Settings screens (owner only)."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, TextAreaField

from saas import LANGUAGES
from saas.forms import country_choices, currency_choices, listed, max_len, no_markup, required, timezone_choices


def _strip(value):
    return value.strip() if isinstance(value, str) else value


# Codes are typed on tablets that like to capitalise and correct words.
_CODE_INPUT = {"autocapitalize": "none", "autocorrect": "off", "autocomplete": "off", "spellcheck": "false"}


class TenantDefaultsForm(FlaskForm):
    business_name = StringField(_l("Business name"), filters=[_strip],
                                validators=[required(), max_len(120), no_markup])
    language = SelectField(_l("Default language"), choices=list(LANGUAGES.items()), **listed())
    timezone = SelectField(_l("Time zone"), **listed())
    currency = SelectField(_l("Currency"), **listed())
    country = SelectField(_l("Country (for phone numbers typed without a country code)"), **listed())

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.timezone.choices = timezone_choices()
        self.currency.choices = currency_choices()
        self.country.choices = country_choices()


class EntryForm(FlaskForm):
    """An entry of an editable list (department; base of the other kinds)."""

    code = StringField(_l("Code"), filters=[_strip], validators=[required(), max_len(40)],
                       render_kw=_CODE_INPUT)
    name_zh = StringField(_l("Chinese name"), filters=[_strip], validators=[required(), max_len(120), no_markup])
    name_en = StringField(_l("English name"), filters=[_strip], validators=[required(), max_len(120), no_markup])
    active = BooleanField(_l("Active (offered when recording new transactions)"), default=True)

    def entry_data(self) -> dict:
        """The values for ``services.save_entry``."""
        data = {"code": self.code.data, "name_zh": self.name_zh.data, "name_en": self.name_en.data,
                "active": self.active.data}
        if "address" in self:
            data["address"] = self.address.data
        if "is_default" in self:
            data["is_default"] = self.is_default.data
        return data


class LocationForm(EntryForm):
    address = StringField(_l("Address"), filters=[_strip], validators=[max_len(255), no_markup])


class TransactionKindForm(EntryForm):
    is_default = BooleanField(_l("Default kind (pre-selected when recording a transaction)"))


ENTRY_FORMS = {"locations": LocationForm, "departments": EntryForm, "transaction-kinds": TransactionKindForm}


class ProgrammeSectionForm(FlaskForm):
    text = TextAreaField(_l("Settings as TOML"), validators=[required(), max_len(50000)],
                         render_kw={"rows": 18, "spellcheck": "false", "autocapitalize": "none",
                                    "autocorrect": "off", "class": "code"})


class ApiKeyForm(FlaskForm):
    name = StringField(_l("Name"), filters=[_strip], validators=[required(), max_len(80), no_markup])
