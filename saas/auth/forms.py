from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SelectField, StringField
from wtforms.validators import Email

from saas import LANGUAGES
from saas.forms import currency_choices, listed, max_len, no_markup, required, timezone_choices

INDUSTRY_CHOICES = [
    ("hotel", _l("Hotel")),
    ("dealership", _l("Car dealership")),
    ("property", _l("Property manager")),
    ("bank", _l("Bank branch")),
    ("other", _l("Other service business")),
]
ROLE_CHOICES = [("staff", _l("Staff")), ("manager", _l("Manager")), ("owner", _l("Owner"))]


def email_field(label):
    return EmailField(label, validators=[required(), max_len(254),
                                         Email(message=_l("Enter a valid email address."))])


class SignupForm(FlaskForm):
    business_name = StringField(_l("Business name"), validators=[required(), max_len(120), no_markup])
    industry = SelectField(_l("Industry"), choices=INDUSTRY_CHOICES, **listed())
    owner_name = StringField(_l("Your name"), validators=[required(), max_len(120), no_markup])
    email = email_field(_l("Email"))
    password = PasswordField(_l("Password"), validators=[required(), max_len(128)])
    language = SelectField(_l("Language"), choices=list(LANGUAGES.items()), **listed())
    timezone = SelectField(_l("Time zone"), default="Asia/Shanghai", **listed())
    currency = SelectField(_l("Currency"), default="CNY", **listed())

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.timezone.choices = timezone_choices()
        self.currency.choices = currency_choices()
        self.industry.choices = INDUSTRY_CHOICES


class LoginForm(FlaskForm):
    email = email_field(_l("Email"))
    password = PasswordField(_l("Password"), validators=[required(), max_len(128)])
    remember = BooleanField(_l("Remember me"))


class ForgotPasswordForm(FlaskForm):
    email = email_field(_l("Email"))


class ResetPasswordForm(FlaskForm):
    password = PasswordField(_l("New password"), validators=[required(), max_len(128)])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField(_l("Current password"), validators=[required(), max_len(128)])
    new_password = PasswordField(_l("New password"), validators=[required(), max_len(128)])


class InviteForm(FlaskForm):
    email = email_field(_l("Email"))
    role = SelectField(_l("Role"), choices=ROLE_CHOICES, default="staff", **listed())


class AcceptInvitationForm(FlaskForm):
    name = StringField(_l("Your name"), validators=[max_len(120), no_markup])
    password = PasswordField(_l("Password"), validators=[required(), max_len(128)])


class EmptyForm(FlaskForm):
    """For POST-only actions (buttons), so CSRF still applies."""
