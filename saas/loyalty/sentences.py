"""The sentences that explain a customer's tier progress: how much more reaches the next
tier, and how much more (by when) keeps the current one at its review.

One source for the guest card and the API (GET /api/v1/customers/{ref}/loyalty), so both
say the same thing: "Needs 1,200 more points by 2027-03-31 to keep Gold". Points and
visits are counted with ngettext ("1 more point", "2 more points"); spend is an amount of
money and has no plural. Numbers and money are formatted for the user's locale; dates by
the caller's formatter (the API keeps ISO dates, which its clients parse; the card shows a
localized date).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

from flask_babel import gettext as _
from flask_babel import ngettext

from saas.formatting import money, number

MEASURES = ("points_earned", "spend", "visits")


def iso_date(day: dt.date) -> str:
    return day.isoformat()


def _amount(measure: str, needed) -> str:
    if measure == "spend":
        return money(Decimal(needed))
    return number(int(needed))


def next_tier_sentence(measure: str, needed, tier: str) -> str:
    """How much more of the measure reaches `tier` (its name in the user's language).
    Nothing more needed: reached, the upgrade comes with the next activity."""
    if not needed:
        return _("Reached %(tier)s: the upgrade comes with the next activity", tier=tier)
    n = _amount(measure, needed)
    if measure == "spend":
        return _("Needs %(amount)s more spend to reach %(tier)s", amount=n, tier=tier)
    if measure == "visits":
        return ngettext("Needs %(n)s more visit to reach %(tier)s", "Needs %(n)s more visits to reach %(tier)s",
                        int(needed), n=n, tier=tier)
    return ngettext("Needs %(n)s more point to reach %(tier)s", "Needs %(n)s more points to reach %(tier)s",
                    int(needed), n=n, tier=tier)


def keep_tier_sentence(measure: str, needed, tier: str, by: dt.date,
                       format_date: Callable[[dt.date], str] = iso_date) -> str:
    """How much more of the measure, by `by` (the last day that counts, the day before the
    review), keeps `tier`; nothing more needed: kept at the review (the day after `by`)."""
    if not needed:
        return _("Enough to keep %(tier)s at the review on %(date)s", tier=tier,
                 date=format_date(by + dt.timedelta(days=1)))
    n, day = _amount(measure, needed), format_date(by)
    if measure == "spend":
        return _("Needs %(amount)s more spend by %(date)s to keep %(tier)s", amount=n, date=day, tier=tier)
    if measure == "visits":
        return ngettext("Needs %(n)s more visit by %(date)s to keep %(tier)s",
                        "Needs %(n)s more visits by %(date)s to keep %(tier)s", int(needed), n=n, date=day, tier=tier)
    return ngettext("Needs %(n)s more point by %(date)s to keep %(tier)s",
                    "Needs %(n)s more points by %(date)s to keep %(tier)s", int(needed), n=n, date=day, tier=tier)
