"""Forms of the loyalty dialogs on the guest card: redeem, adjust, and the reason asked
before a redemption is voided or a transaction reversed. The ledger repeats every check
that protects the books; the forms give the messages next to the fields."""
from __future__ import annotations

import re
import uuid

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, HiddenField, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import ValidationError

from saas.forms import listed, max_len, required

PAY_WITH_POINTS = "points"
_KEY = re.compile(r"^[0-9a-f]{32}$")


def new_key() -> str:
    """A one-time key for a dialog's form: the same key submitted twice writes once."""
    return uuid.uuid4().hex


def _key(form, field):
    if not _KEY.match(field.data or ""):
        raise ValidationError(_l("The form expired. Please submit it again."))


def normalize_points(raw) -> str:
    """Points as typed on a tablet ("+1,200", "−50" with a typographic minus) as the
    ledger reads them ("1200", "-50")."""
    text = (raw or "").strip().replace(",", "").replace("，", "").replace("−", "-").replace("－", "-")
    return text.removeprefix("+")


def _whole_points(form, field):
    raw = normalize_points(field.data)
    if raw and not (raw.isascii() and raw.lstrip("-").isdigit()):
        raise ValidationError(_l("Enter a whole number of points."))


class _KeyedForm(FlaskForm):
    idempotency_key = HiddenField(validators=[_key])

    def key(self, kind: str) -> str:
        """The ledger's idempotency key: namespaced, so a typed key cannot name the keys
        the ledger makes itself (txn:..., void:...)."""
        return f"card:{kind}:{self.idempotency_key.data}"


class RedeemForm(_KeyedForm):
    reward = RadioField(_l("What to redeem"), **listed())
    points = StringField(_l("Points to pay with"), validators=[_whole_points],
                         render_kw={"inputmode": "numeric", "autocomplete": "off"})
    location = SelectField(_l("Where it is redeemed"), default="", **listed())
    note = StringField(_l("Note"), validators=[max_len(255)])

    def __init__(self, *args, rewards=(), locations=(), locale: str = "en", **kwargs):
        """``locations``: the tenant's active locations (code, name)."""
        super().__init__(*args, **kwargs)
        self._rewards = {str(r.id): r for r in rewards}
        self._places = dict(locations)
        self.reward.choices = [(str(r.id), r.name_for(locale)) for r in rewards] + \
            [(PAY_WITH_POINTS, str(_l("Pay with points")))]
        self.location.choices = [("", str(_l("— None —")))] + list(locations)

    def validate_points(self, field):
        if self.reward.data == PAY_WITH_POINTS and not (field.data or "").strip():
            raise ValidationError(_l("Enter the number of points to pay with."))

    def validate_location(self, field):
        reward = self._rewards.get(self.reward.data or "")
        if reward is not None and reward.location_codes and field.data not in reward.location_codes:
            raise ValidationError(_l("This reward is given only at %(places)s: choose where it is redeemed.",
                                     places=self.places_of(reward)))

    def places_of(self, reward) -> str:
        """The names of the locations a reward is limited to, for the dialog."""
        return ", ".join(self._places.get(c, c) for c in reward.location_codes)


class AdjustForm(_KeyedForm):
    points = StringField(_l("Points (+ to add, − to take away)"), validators=[required(), _whole_points],
                         render_kw={"inputmode": "numeric", "autocomplete": "off"})
    reason = StringField(_l("Reason"), validators=[required(), max_len(255)])
    goodwill = BooleanField(_l("Service recovery (goodwill)"))


class ReasonForm(FlaskForm):
    reason = TextAreaField(_l("Reason"), validators=[required(), max_len(255)], render_kw={"rows": 3})
