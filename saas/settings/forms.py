"""Forms of the Settings screens (owner only)."""
from __future__ import annotations

import copy
import re
import unicodedata
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, FieldList, Form, FormField, SelectField, StringField, TextAreaField

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


# --- the loyalty section as a form (the everyday keys; the TOML editor keeps the rest) -----

_NUMBER_INPUT = {"inputmode": "decimal", "autocomplete": "off", "spellcheck": "false"}
_WHOLE_INPUT = {"inputmode": "numeric", "autocomplete": "off", "spellcheck": "false"}
_WHOLE_RE = re.compile(r"^-?\d{1,13}$", re.ASCII)  # a threshold may be 1,000,000,000,000 (MAX_THRESHOLD)
_DECIMAL_RE = re.compile(r"^-?(\d{1,12}(\.\d{0,12})?|\.\d{1,12})$", re.ASCII)

EXPIRY_CHOICES = [("months", _l("A number of months after they were earned")),
                  ("end_of_next_year", _l("At the end of the year after the year they were earned")),
                  ("never", _l("Never"))]
TIER_MEASURE_CHOICES = [("points_earned", _l("Points earned")), ("spend", _l("Spend")),
                        ("visits", _l("Number of stays or visits"))]
EVALUATION_WINDOW_CHOICES = [("rolling_12_months", _l("The last 12 months")),
                             ("calendar_year", _l("The calendar year so far"))]
TIER_REVIEW_CHOICES = [("anniversary", _l("Yearly, on the tier's anniversary")),
                       ("january", _l("Every 1 January"))]


# Commas only as thousands separators (1,000 or 12,500.5): "0,05" (a decimal comma) is not 5.
_GROUPED_RE = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d*)?$", re.ASCII)


def _number_text(value: str) -> str:
    """Typed number text made plain: full-width digits and signs (Chinese input methods)
    become ASCII, spaces and thousands separators go ("x" for commas elsewhere, which
    the number patterns then refuse)."""
    text = re.sub(r"\s", "", unicodedata.normalize("NFKC", value or "").strip().replace("−", "-"))
    if "," in text:
        return text.replace(",", "") if _GROUPED_RE.match(text) else "x"
    return text


def _whole(field, errors: list):
    """The field's whole number, or None (blank); a message on the field for other text."""
    text = _number_text(field.data)
    if not text:
        return None
    if not _WHOLE_RE.match(text):
        field.errors = list(field.errors) + [str(_l("Enter a whole number, such as 500."))]
        errors.append(field)
        return None
    return int(text)


def _decimal(field, errors: list):
    """The field's number as text (how the section stores decimals), or None (blank)."""
    text = _number_text(field.data)
    if not text:
        return None
    if not _DECIMAL_RE.match(text):
        field.errors = list(field.errors) + [str(_l("Enter a number, such as 1.25."))]
        errors.append(field)
        return None
    return str(Decimal(text))


def _required(field, errors: list, value):
    if value is None and field not in errors:
        field.errors = list(field.errors) + [str(_l("This field is required."))]
        errors.append(field)
    return value


class TierRowForm(Form):
    """One row of the tiers table (a sub-form: the page's form carries the CSRF token)."""

    code = StringField(_l("Code"), filters=[_strip], render_kw={**_CODE_INPUT, "size": 8, "maxlength": 40})
    name_zh = StringField(_l("Chinese name"), filters=[_strip], render_kw={"size": 8, "maxlength": 200})
    name_en = StringField(_l("English name"), filters=[_strip], render_kw={"size": 8, "maxlength": 200})
    threshold = StringField(_l("Threshold"), render_kw={**_WHOLE_INPUT, "size": 6, "maxlength": 20})
    retention_threshold = StringField(_l("Retention threshold"),
                                      render_kw={**_WHOLE_INPUT, "size": 6, "maxlength": 20})
    multiplier = StringField(_l("Points multiplier"), render_kw={**_NUMBER_INPUT, "size": 4, "maxlength": 20})
    discount_percent = StringField(_l("Discount %"), render_kw={**_NUMBER_INPUT, "size": 4, "maxlength": 20})
    # Two lines, so that a sentence of perks is read whole in the row (an input cuts it off).
    perks_zh = TextAreaField(_l("Perks (Chinese)"), filters=[_strip], render_kw={"maxlength": 500, "rows": 2})
    perks_en = TextAreaField(_l("Perks (English)"), filters=[_strip], render_kw={"maxlength": 500, "rows": 2})
    remove = BooleanField(_l("Remove"))

    TEXT = ("code", "name_zh", "name_en", "perks_zh", "perks_en")
    NUMBERS = ("threshold", "retention_threshold", "multiplier", "discount_percent")

    def is_blank(self) -> bool:
        return not any((self[k].data or "").strip() for k in self.TEXT + self.NUMBERS)

    def tier_data(self, errors: list) -> dict:
        tier = {"code": self.code.data or "", "name_zh": self.name_zh.data or "", "name_en": self.name_en.data or ""}
        tier["threshold"] = _required(self.threshold, errors, _whole(self.threshold, errors))
        # Blank optional values are left out: the programme's defaults apply (retention =
        # the threshold, multiplier 1, no discount).
        optional = {"retention_threshold": _whole(self.retention_threshold, errors),
                    "multiplier": _decimal(self.multiplier, errors),
                    "discount_percent": _decimal(self.discount_percent, errors),
                    "perks_zh": self.perks_zh.data or None, "perks_en": self.perks_en.data or None}
        tier.update({k: v for k, v in optional.items() if v is not None})
        return tier


class LoyaltyForm(FlaskForm):
    """The everyday keys of the ``[loyalty]`` section. Numbers are typed as text and read
    here (so a wrong entry is kept and named); the programme's own rules check the values."""

    points_per_currency_unit = StringField(_l("Points per 1 of the currency spent"), render_kw=_NUMBER_INPUT)
    pending_days = StringField(_l("Pending days"), render_kw=_WHOLE_INPUT)
    expiry = SelectField(_l("Points expire"), choices=EXPIRY_CHOICES, **listed())
    expiry_months = StringField(_l("Months before points expire"), render_kw=_WHOLE_INPUT)
    tier_measure = SelectField(_l("Tiers are reached by"), choices=TIER_MEASURE_CHOICES, **listed())
    evaluation_window = SelectField(_l("Counted over"), choices=EVALUATION_WINDOW_CHOICES, **listed())
    tier_review = SelectField(_l("Tiers are reviewed"), choices=TIER_REVIEW_CHOICES, **listed())
    birthday_bonus = StringField(_l("Birthday bonus points"), render_kw=_WHOLE_INPUT)
    referrer_points = StringField(_l("Referral reward: points for the customer who refers"),
                                  render_kw=_WHOLE_INPUT)
    referred_points = StringField(_l("Referral reward: points for the new customer"), render_kw=_WHOLE_INPUT)
    point_value = StringField(_l("Value of 1 point when points pay"), render_kw=_NUMBER_INPUT)
    min_redeem_points = StringField(_l("Minimum points to pay with"), render_kw=_WHOLE_INPUT)
    staff_limit = StringField(_l("Largest adjustment by staff"), render_kw=_WHOLE_INPUT)
    manager_limit = StringField(_l("Largest adjustment by a manager"), render_kw=_WHOLE_INPUT)
    goodwill_budget = StringField(_l("Goodwill budget"), render_kw=_NUMBER_INPUT)
    tiers = FieldList(FormField(TierRowForm), min_entries=1, max_entries=40)

    WHOLE = ("pending_days", "expiry_months", "birthday_bonus", "referrer_points", "referred_points",
             "min_redeem_points", "staff_limit", "manager_limit")
    DECIMAL = ("points_per_currency_unit", "point_value", "goodwill_budget")
    EMPTY_ROWS = 2
    # The fields whose text is not a number (set by section_data), and those the
    # programme's rules refused (place_problems): WTForms' own errors summary of the tier
    # rows is computed during validate(), before these are known.
    unreadable: tuple = ()
    refused: tuple = ()
    # Where a key path of the section is shown when it is not a field of the same name.
    FIELD_AT = {("referral", "referrer_points"): "referrer_points", ("referral", "referred_points"): "referred_points",
                ("adjust_limits", "staff"): "staff_limit", ("adjust_limits", "manager"): "manager_limit"}

    @classmethod
    def from_programme(cls, programme) -> LoyaltyForm:
        """The form showing a saved programme (saas.loyalty.programme.Programme), with a
        few empty tier rows to add tiers."""
        def plain(d):  # 1.10 -> "1.1", 2000 -> "2000"
            text = format(d, "f")
            return text.rstrip("0").rstrip(".") if "." in text else text

        tiers = [{"code": t.code, "name_zh": t.name_zh, "name_en": t.name_en, "threshold": str(t.threshold),
                  "retention_threshold": str(t.retention_threshold), "multiplier": plain(t.multiplier),
                  "discount_percent": plain(t.discount_percent), "perks_zh": t.perks_zh, "perks_en": t.perks_en}
                 for t in programme.tiers] + [{}] * cls.EMPTY_ROWS
        return cls(formdata=None, data={
            "points_per_currency_unit": plain(programme.rate), "pending_days": str(programme.pending_days),
            "expiry": programme.expiry, "expiry_months": str(programme.expiry_months),
            "tier_measure": programme.tier_measure, "evaluation_window": programme.evaluation_window,
            "tier_review": programme.tier_review, "birthday_bonus": str(programme.birthday_bonus),
            "referrer_points": str(programme.referrer_points), "referred_points": str(programme.referred_points),
            "point_value": plain(programme.point_value), "min_redeem_points": str(programme.min_redeem_points),
            "staff_limit": str(programme.adjust_limits.get("staff", 0)),
            "manager_limit": str(programme.adjust_limits.get("manager", 0)),
            "goodwill_budget": plain(programme.goodwill_budget), "tiers": tiers})

    def section_data(self, saved) -> dict | None:
        """The new section: ``saved`` with the keys this form edits replaced (promotions,
        earning rates and every other key stay). None, with messages on the fields, when
        a number cannot be read."""
        errors: list = []
        values = {name: _required(self[name], errors, _whole(self[name], errors)) for name in self.WHOLE}
        values.update({name: _required(self[name], errors, _decimal(self[name], errors)) for name in self.DECIMAL})
        n_saved = len(saved.get("tiers") or []) if isinstance(saved, dict) else 0
        rows = [(i, row.form, row.form.tier_data(errors)) for i, row in enumerate(self.tiers)
                if not row.form.remove.data and not row.form.is_blank()]
        self.unreadable = errors
        if errors:
            return None
        # The tiers shown keep their order: one given a threshold out of order is refused
        # (not quietly moved, which would reprice the programme). A tier added in an empty
        # row at the end (a base tier put back, say) takes its place by its threshold.
        ordered = [(form, tier) for i, form, tier in rows if i < n_saved]
        for _i, form, tier in sorted((r for r in rows if r[0] >= n_saved), key=lambda r: r[2]["threshold"]):
            at = next((k for k, (_f, t) in enumerate(ordered) if t["threshold"] > tier["threshold"]), len(ordered))
            ordered.insert(at, (form, tier))
        rows = ordered
        self._saved_rows = [row for row, _tier in rows]
        tiers = [tier for _row, tier in rows]
        data = copy.deepcopy(saved) if isinstance(saved, dict) else {}
        data.update({
            "points_per_currency_unit": values["points_per_currency_unit"],
            "pending_days": values["pending_days"],
            "expiry": self.expiry.data,
            "expiry_months": values["expiry_months"],
            "tier_measure": self.tier_measure.data,
            "evaluation_window": self.evaluation_window.data,
            "tier_review": self.tier_review.data,
            "birthday_bonus": values["birthday_bonus"],
            "point_value": values["point_value"],
            "min_redeem_points": values["min_redeem_points"],
            "goodwill_budget": values["goodwill_budget"],
            "tiers": tiers,
        })
        referral = data.get("referral") if isinstance(data.get("referral"), dict) else {}
        data["referral"] = {**referral, "referrer_points": values["referrer_points"],
                            "referred_points": values["referred_points"]}
        limits = data.get("adjust_limits") if isinstance(data.get("adjust_limits"), dict) else {}
        data["adjust_limits"] = {**limits, "staff": values["staff_limit"], "manager": values["manager_limit"]}
        return data

    def place_problems(self, problems: list) -> None:
        """Show the programme's problems with the section_data() this form gave beside
        the fields they are about (a tier's on its own row), the others above the form."""
        refused = []
        for problem in problems:
            target = self._field_at(getattr(problem, "at", ()))
            if target is None:
                self.form_errors.append(str(problem))
            else:
                target.errors = list(target.errors) + [str(problem.beside_field())]
                refused.append(target)
        self.refused = tuple(refused)

    def _field_at(self, at: tuple):
        if len(at) == 3 and at[0] == "tiers" and isinstance(at[1], int):
            rows = getattr(self, "_saved_rows", [])
            if 0 <= at[1] < len(rows) and at[2] in rows[at[1]]:
                return rows[at[1]][at[2]]
            return None
        name = self.FIELD_AT.get(at) or (at[0] if len(at) == 1 else None)
        return self[name] if name in self and name != "tiers" else None
