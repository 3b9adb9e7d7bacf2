"""Forms of the customer archive. The services repeat every check that protects the
data; the forms give the same messages next to the fields before anything is sent."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, EmailField, SelectField, StringField, TextAreaField
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
    phone = services.normalise_phone(field.data)
    if phone and not services.PHONE_RE.match(phone):
        raise ValidationError(_l("Enter a phone number of 3 to 20 digits (a leading + is allowed)."))


def _entry_choices(entries, empty_label=None) -> list[tuple[str, str]]:
    locale = locale_code()
    choices = [("", str(empty_label))] if empty_label is not None else []
    return choices + [(str(e.id), e.name_for(locale)) for e in entries]


class CustomerForm(FlaskForm):
    name = StringField(_l("Name"), validators=[required(), max_len(120), no_markup])
    address_as = StringField(_l("Form of address"), validators=[max_len(60), no_markup])
    phone = StringField(_l("Phone"), validators=[max_len(32), _phone], render_kw={"inputmode": "tel"})
    email = EmailField(_l("Email"), validators=[Optional(), max_len(254),
                                                Email(message=_l("Enter a valid email address."))])
    external_ref = StringField(_l("External reference"), validators=[max_len(64), no_markup])
    card_number = StringField(_l("Card number"), validators=[max_len(40), no_markup])
    classification = SelectField(_l("Classification"), default="general", **listed())
    location_id = SelectField(_l("Location"), **listed())
    notes = TextAreaField(_l("Notes"), validators=[max_len(2000)])

    def __init__(self, *args, locations=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.classification.choices = [(k, str(v)) for k, v in services.CLASSIFICATIONS.items()]
        self.location_id.choices = _entry_choices(locations, _l("— None —"))

    def values(self) -> dict:
        """What the service needs."""
        return {name: self[name].data for name in
                ("name", "address_as", "phone", "email", "external_ref", "card_number",
                 "classification", "location_id", "notes")}


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
