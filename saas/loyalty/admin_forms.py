"""The reward form of the loyalty administration screens. The rules live in
saas/loyalty/services.save_reward; the form carries the typed values and shows the
messages next to its fields."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectMultipleField, StringField, widgets

from saas.forms import max_len, no_markup


def _strip(value):
    return value.strip() if isinstance(value, str) else value


class CheckboxListField(SelectMultipleField):
    """Several choices as checkboxes (easier on a tablet than a multi-select). Unknown
    values are refused by the service with a message of ours, not WTForms' own."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()

    def pre_validate(self, form):
        pass


class RewardForm(FlaskForm):
    code = StringField(_l("Code"), filters=[_strip], validators=[max_len(40)],
                       render_kw={"autocomplete": "off", "spellcheck": "false"})
    name_zh = StringField(_l("Chinese name"), filters=[_strip], validators=[max_len(120), no_markup])
    name_en = StringField(_l("English name"), filters=[_strip], validators=[max_len(120), no_markup])
    points_cost = StringField(_l("Points cost"), filters=[_strip], render_kw={"inputmode": "numeric"})
    stock = StringField(_l("Stock (leave empty for unlimited)"), filters=[_strip],
                        render_kw={"inputmode": "numeric"})
    active_from = StringField(_l("Available from"), filters=[_strip], render_kw={"type": "date"})
    active_until = StringField(_l("Available until"), filters=[_strip], render_kw={"type": "date"})
    location_codes = CheckboxListField(_l("Locations (none ticked: every location)"))
    active = BooleanField(_l("Active (staff can redeem it)"), default=True)

    def __init__(self, *args, locations=(), **kwargs):
        """``locations``: (code, label) pairs to tick from."""
        super().__init__(*args, **kwargs)
        self.location_codes.choices = list(locations)

    def values(self) -> dict:
        return {"code": self.code.data, "name_zh": self.name_zh.data, "name_en": self.name_en.data,
                "points_cost": self.points_cost.data, "stock": self.stock.data,
                "active_from": self.active_from.data, "active_until": self.active_until.data,
                "location_codes": list(self.location_codes.data or []), "active": bool(self.active.data)}

