"""Forms of the customer archive. The services repeat every check that protects the
data; the forms give the same messages next to the fields before anything is sent."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, DateTimeLocalField, EmailField, SelectField, StringField, TextAreaField
from wtforms.validators import Email, InputRequired, Optional, ValidationError

from saas.customers import services
from saas.errors import ValidationFailed
from saas.formatting import locale_code
from saas.forms import listed, max_len, no_markup, required


def _service_check(parse):
    """A field validator from a service parser that raises ValidationFailed."""
    def validator(form, field):
        try:
            parse(field.data)
        except ValidationFailed as exc:
            raise ValidationError(str(next(m for v in exc.errors.values() for m in v))) from None
    return validator


def _phone(form, field):
    try:
        services.parse_phone(field.data, getattr(form, "region", "CN"))
    except ValueError:
        raise ValidationError(services.PHONE_MESSAGE) from None


def _tags(form, field):
    try:
        services.parse_tags(field.data)
    except ValidationFailed as exc:
        raise ValidationError(str(exc.errors["tags"][0])) from None


def _choices(mapping: dict, empty_label=None) -> list[tuple[str, str]]:
    choices = [("", str(empty_label))] if empty_label is not None else []
    return choices + [(k, str(v)) for k, v in mapping.items()]


def _entry_choices(entries, empty_label=None) -> list[tuple[str, str]]:
    locale = locale_code()
    choices = [("", str(empty_label))] if empty_label is not None else []
    return choices + [(str(e.id), e.name_for(locale)) for e in entries]


class CustomerForm(FlaskForm):
    name = StringField(_l("Name"), validators=[required(), max_len(120), no_markup])
    address_as = StringField(_l("Form of address"), validators=[max_len(60), no_markup])
    phone = StringField(_l("Phone"), validators=[max_len(40), _phone],
                        render_kw={"inputmode": "tel", "autocomplete": "off"})
    phone_alt = StringField(_l("Other phone"), validators=[max_len(40), _phone],
                            render_kw={"inputmode": "tel", "autocomplete": "off"})
    email = EmailField(_l("Email"), validators=[Optional(), max_len(254),
                                                Email(message=_l("Enter a valid email address."))])
    birthday = DateField(_l("Birthday"), validators=[Optional()])
    gender = SelectField(_l("Gender"), default="", **listed())
    external_ref = StringField(_l("External reference"), validators=[max_len(64), no_markup])
    card_number = StringField(_l("Card number"), validators=[max_len(40), no_markup])
    plate_number = StringField(_l("Plate number"), validators=[max_len(20), no_markup],
                               render_kw={"autocapitalize": "characters", "autocomplete": "off"})
    company = StringField(_l("Company"), validators=[max_len(120), no_markup])
    job_title = StringField(_l("Job title"), validators=[max_len(60), no_markup])
    company_industry = StringField(_l("Company industry"), validators=[max_len(60), no_markup])
    company_size = SelectField(_l("Company size"), default="", **listed())
    classification = SelectField(_l("Classification"), default="general", **listed())
    owner_user_id = SelectField(_l("Account manager"), default="", **listed())
    location_id = SelectField(_l("Location"), **listed())
    tags = StringField(_l("Tags"), validators=[max_len(400), _tags])
    consent_phone = BooleanField(_l("May be called"))
    consent_sms = BooleanField(_l("May receive text messages"))
    consent_email = BooleanField(_l("May receive emails"))
    notes = TextAreaField(_l("Notes"), validators=[max_len(2000)])

    def __init__(self, *args, locations=(), members=(), region="CN", **kwargs):
        super().__init__(*args, **kwargs)
        self.region = region
        self.classification.choices = _choices(services.CLASSIFICATIONS)
        self.gender.choices = _choices(services.GENDERS, _l("— Not given —"))
        self.company_size.choices = _choices(services.COMPANY_SIZES, _l("— Not given —"))
        self.location_id.choices = _entry_choices(locations, _l("— None —"))
        self.owner_user_id.choices = [("", str(_l("— None —")))] + [(str(u.id), u.name) for u in members]

    def values(self) -> dict:
        """What the service needs."""
        return {name: self[name].data for name in services.PROFILE_FIELDS}


class DecisionMakerForm(FlaskForm):
    name = StringField(_l("Name"), validators=[required(), max_len(120), no_markup])
    role = StringField(_l("Role"), validators=[max_len(60), no_markup])
    phone = StringField(_l("Phone"), validators=[max_len(40), _phone], render_kw={"inputmode": "tel"})

    def __init__(self, *args, region="CN", **kwargs):
        super().__init__(*args, **kwargs)
        self.region = region

    def values(self) -> dict:
        return {name: self[name].data for name in ("name", "role", "phone")}


class PreferenceForm(FlaskForm):
    category = SelectField(_l("Category"), **listed())
    key = StringField(_l("What"), validators=[required(), max_len(60), no_markup])
    value = StringField(_l("Preference"), validators=[required(), max_len(255), no_markup])
    location_id = SelectField(_l("Recorded at"), **listed())

    def __init__(self, *args, locations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.category.choices = _choices(services.PREFERENCE_CATEGORIES)
        self.location_id.choices = _entry_choices(locations, _l("— None —"))

    def values(self) -> dict:
        return {name: self[name].data for name in ("category", "key", "value", "location_id")}


class ContactLogForm(FlaskForm):
    channel = SelectField(_l("Kind of contact"), **listed())
    occurred_at = DateTimeLocalField(_l("When"), format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
                                     validators=[Optional()])
    outcome = TextAreaField(_l("Outcome"), validators=[max_len(500)], render_kw={"rows": 3})
    next_step = StringField(_l("Next step"), validators=[max_len(255)])
    location_id = SelectField(_l("Location"), **listed())

    def __init__(self, *args, locations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.channel.choices = _choices(services.CONTACT_CHANNELS)
        self.location_id.choices = _entry_choices(locations, _l("— None —"))

    def values(self) -> dict:
        return {name: self[name].data for name in ("channel", "occurred_at", "outcome", "next_step", "location_id")}


class TransactionForm(FlaskForm):
    kind_id = SelectField(_l("Kind"), **listed())
    occurred_on = DateField(_l("Date"), validators=[InputRequired(message=_l("This field is required."))])
    amount = StringField(_l("Amount"), validators=[_service_check(services.parse_amount)],
                         render_kw={"inputmode": "decimal", "autocomplete": "off"})
    quantity = StringField(_l("Quantity"), default="1", validators=[_service_check(services.parse_quantity)],
                           render_kw={"inputmode": "numeric"})
    location_id = SelectField(_l("Location"), **listed())
    department_id = SelectField(_l("Department"), **listed())
    note = StringField(_l("Note"), validators=[max_len(255)])

    def __init__(self, *args, kinds=(), locations=(), departments=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.kind_id.choices = _entry_choices(kinds)
        self.location_id.choices = _entry_choices(locations, _l("— None —"))
        self.department_id.choices = _entry_choices(departments, _l("— None —"))

    def values(self) -> dict:
        return {name: self[name].data for name in
                ("kind_id", "occurred_on", "amount", "quantity", "location_id", "department_id", "note")}
