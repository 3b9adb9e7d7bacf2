"""A tenant's loyalty programme: the ``[loyalty]`` section of its set-up, read into a
checked, immutable ``Programme`` that computes earnings, lot dates, tiers and windows.

The section is stored as JSON in ``programme_sections`` (edited as TOML in Settings,
loaded from ``tenants/<industry>.toml`` at sign-up). Keys and their defaults::

    points_per_currency_unit = "0.1"     # 1 point per ¥10, rounded down per transaction
    earn_rates = [{ kind = "stay", location = "", rate = "0.1" }]   # most specific wins
    category_multipliers = { "food-beverage" = "2" }                # by department code
    flat_points = [{ kind = "stay", per = "visit" | "unit", points = 50 }]
    pending_days = 0                     # earned points locked for N days
    expiry = "months" | "end_of_next_year" | "never";  expiry_months = 24
    tier_measure = "points_earned" | "spend" | "visits"
    evaluation_window = "rolling_12_months" | "calendar_year"
    tier_review = "anniversary" | "january"
    tiers = [{ code, name_zh, name_en, threshold, retention_threshold?, multiplier,
               discount_percent, perks_zh, perks_en }]
    promotions = [{ code, name_zh, name_en, starts_on, ends_on, kinds = [], multiplier, bonus }]
    birthday_bonus = 0                   # once a year, first transaction in the birthday month
    referral = { referrer_points = 0, referred_points = 0 }
    point_value = "0.01"                 # currency per point when points pay
    min_redeem_points = 0
    adjust_limits = { staff = 200, manager = 5000 }   # owners: any
    goodwill_budget = "0"                # per staff member per month, in currency
"""
from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal, InvalidOperation

from flask_babel import lazy_gettext as _l

TIER_MEASURES = ("points_earned", "spend", "visits")
EVALUATION_WINDOWS = ("rolling_12_months", "calendar_year")
TIER_REVIEWS = ("anniversary", "january")
EXPIRY_RULES = ("months", "end_of_next_year", "never")
FLAT_PER = ("visit", "unit")
MAX_POINTS = 10_000_000
# A tier threshold may be spend in the currency (a bank's private-banking tier: millions).
MAX_THRESHOLD = 1_000_000_000_000
MAX_DECIMAL = 1_000_000  # rates, multipliers, a point's value, the goodwill budget
MAX_TIERS = 20
MAX_EXPIRY_MONTHS = 1200  # a hundred years: beyond, the expiry day is past the calendar's end


@dataclass(frozen=True)
class Problem:
    """A problem with where in the section it is: ``at`` is a key path such as
    ("pending_days",) or ("tiers", 0, "threshold") (the first tier as saved), so a form
    can show it beside its field; ``near`` is what to say there when the message names
    its place ("Tier 2 threshold ...": beside the field, the row already says which)."""

    message: object
    at: tuple = ()
    near: object = None

    def __str__(self) -> str:
        return str(self.message)

    def beside_field(self):
        return self.message if self.near is None else self.near


class ProgrammeError(ValueError):
    """``partial``: the programme as read with a default in place of each refused value
    (None when nothing could be read), for checks that should be said at the same time."""

    def __init__(self, problems: list, partial: "Programme | None" = None):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems
        self.partial = partial


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by ``months`` calendar months, clamped to the month's last day."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True)
class Tier:
    code: str
    name_zh: str
    name_en: str
    threshold: int
    retention_threshold: int
    multiplier: Decimal = Decimal(1)
    discount_percent: Decimal = Decimal(0)
    perks_zh: str = ""
    perks_en: str = ""

    def name_for(self, locale: str) -> str:
        return self.name_zh if locale.startswith("zh") else self.name_en

    def perks_for(self, locale: str) -> str:
        return self.perks_zh if locale.startswith("zh") else self.perks_en


@dataclass(frozen=True)
class Promotion:
    code: str
    name_zh: str
    name_en: str
    starts_on: dt.date
    ends_on: dt.date
    kinds: tuple[str, ...] = ()
    multiplier: Decimal = Decimal(1)
    bonus: int = 0

    def applies(self, kind: str, on: dt.date) -> bool:
        return self.starts_on <= on <= self.ends_on and (not self.kinds or kind in self.kinds)

    def name_for(self, locale: str) -> str:
        return self.name_zh if locale.startswith("zh") else self.name_en


@dataclass(frozen=True)
class Earning:
    points: int
    detail: dict


@dataclass(frozen=True)
class Programme:
    rate: Decimal = Decimal("0.1")
    earn_rates: tuple[tuple[str, str, Decimal], ...] = ()
    category_multipliers: dict = field(default_factory=dict)
    flat_points: tuple[tuple[str, str, int], ...] = ()
    pending_days: int = 0
    expiry: str = "months"
    expiry_months: int = 24
    tier_measure: str = "points_earned"
    evaluation_window: str = "rolling_12_months"
    tier_review: str = "anniversary"
    tiers: tuple[Tier, ...] = ()
    promotions: tuple[Promotion, ...] = ()
    birthday_bonus: int = 0
    referrer_points: int = 0
    referred_points: int = 0
    point_value: Decimal = Decimal("0.01")
    min_redeem_points: int = 0
    adjust_limits: dict = field(default_factory=lambda: {"staff": 200, "manager": 5000})
    goodwill_budget: Decimal = Decimal(0)

    # --- reading -----------------------------------------------------------------
    @classmethod
    def from_data(cls, data) -> "Programme":
        """The programme of a ``[loyalty]`` section; raises ProgrammeError listing every
        problem (in the user's language) when the section is not valid."""
        return _Reader(data).programme()

    # --- earning -----------------------------------------------------------------
    def rate_for(self, kind: str, location: str) -> Decimal:
        best, score = self.rate, -1
        for k, loc, rate in self.earn_rates:
            if (k and k != kind) or (loc and loc != location):
                continue
            s = (2 if k else 0) + (1 if loc else 0)
            if s > score:
                best, score = rate, s
        return best

    def tier(self, code: str) -> Tier | None:
        for t in self.tiers:
            if t.code == code:
                return t
        return None

    def tier_index(self, code: str) -> int:
        for i, t in enumerate(self.tiers):
            if t.code == code:
                return i
        return -1

    def earn(self, amount: Decimal, quantity: int, kind: str, on: dt.date, location: str = "",
             department: str = "", tier_code: str = "") -> Earning:
        """Points for one transaction: amount x rate x category x tier x promotion,
        rounded down once, plus flat points and promotion bonuses."""
        rate = self.rate_for(kind, location)
        category = self.category_multipliers.get(department, Decimal(1)) if department else Decimal(1)
        tier = self.tier(tier_code)
        tier_mult = tier.multiplier if tier else Decimal(1)
        promos = [p for p in self.promotions if p.applies(kind, on)]
        promo_mult = max((p.multiplier for p in promos), default=Decimal(1))
        base = max(amount, Decimal(0)) * rate
        variable = (base * category * tier_mult * promo_mult).to_integral_value(rounding=ROUND_FLOOR)
        flat = sum(pts * (quantity if per == "unit" else 1)
                   for k, per, pts in self.flat_points if k in ("", kind))
        bonus = sum(p.bonus for p in promos)
        points = min(int(variable) + flat + bonus, MAX_POINTS)
        detail = {"base": str(base.to_integral_value(rounding=ROUND_FLOOR)), "rate": str(rate)}
        if category != 1:
            detail["category_multiplier"] = str(category)
        if tier_mult != 1:
            detail["tier"] = tier_code
            detail["tier_multiplier"] = str(tier_mult)
        if promos:
            detail["promotions"] = [p.code for p in promos]
            if promo_mult != 1:
                detail["promotion_multiplier"] = str(promo_mult)
        if flat:
            detail["flat"] = flat
        if bonus:
            detail["bonus"] = bonus
        return Earning(points, detail)

    # --- lot dates ------------------------------------------------------------------
    def available_on(self, earned_on: dt.date) -> dt.date:
        return earned_on + dt.timedelta(days=self.pending_days)

    def expires_on(self, earned_on: dt.date) -> dt.date | None:
        """The first day a lot earned on ``earned_on`` is no longer valid."""
        if self.expiry == "never":
            return None
        if self.expiry == "end_of_next_year":
            return dt.date(earned_on.year + 2, 1, 1)
        return add_months(earned_on, self.expiry_months)

    # --- tiers ------------------------------------------------------------------------
    def window(self, as_of: dt.date) -> tuple[dt.date, dt.date]:
        """The evaluation window ending on ``as_of`` (both days included)."""
        if self.evaluation_window == "calendar_year":
            return dt.date(as_of.year, 1, 1), as_of
        return add_months(as_of, -12) + dt.timedelta(days=1), as_of

    def qualified_index(self, value) -> int:
        """The highest tier whose threshold ``value`` meets (-1: none)."""
        index = -1
        for i, t in enumerate(self.tiers):
            if value >= t.threshold:
                index = i
        return index

    def next_review(self, since: dt.date, after: dt.date | None = None) -> dt.date:
        """When a tier held since ``since`` is next reviewed (after the review of ``after``,
        when given): 1 January, or the anniversary of ``since`` itself, so that a tier won
        on 29 February is reviewed on the 28th, and on the 29th in a leap year."""
        day = after or since
        if self.tier_review == "january":
            return dt.date(day.year + 1, 1, 1)
        years = max(1, day.year - since.year)
        while add_months(since, 12 * years) <= day:
            years += 1
        return add_months(since, 12 * years)

    @property
    def goodwill_budget_points(self) -> int:
        """The monthly goodwill budget of a staff member, in points."""
        return int(self.goodwill_budget / self.point_value) if self.point_value else 0

    def points_value(self, points: int) -> Decimal:
        return (Decimal(points) * self.point_value).quantize(Decimal("0.01"))


# What a text setting is called in a message (not its key).
TEXT_LABELS = {"code": _l("code"), "name_zh": _l("Chinese name"), "name_en": _l("English name"),
               "perks_zh": _l("Chinese perks text"), "perks_en": _l("English perks text"),
               "kind": _l("transaction kind"), "location": _l("location")}


class _Reader:
    """Reads a section, collecting every problem instead of stopping at the first."""

    def __init__(self, data):
        self.data = data
        self.problems: list = []

    def fail(self, message, at: tuple = (), near=None) -> None:
        self.problems.append(Problem(message, at, near) if at else message)

    def decimal(self, value, what, default: Decimal, minimum: Decimal = Decimal(0), at: tuple = ()) -> Decimal:
        if value is None:
            return default
        try:
            d = Decimal(str(value))
        except (InvalidOperation, ValueError):
            d = None
        if d is not None and d.is_finite() and d > MAX_DECIMAL and not isinstance(value, bool):
            self.fail(_l("%(what)s must be at most %(max)s.", what=what, max=f"{MAX_DECIMAL:,}"), at,
                      _l("Must be at most %(max)s.", max=f"{MAX_DECIMAL:,}"))
            return default
        if d is None or not d.is_finite() or d < minimum or isinstance(value, bool):
            self.fail(_l("%(what)s must be a number of at least %(min)s.", what=what, min=minimum), at,
                      _l("Must be a number of at least %(min)s.", min=minimum))
            return default
        if d != 0 and d.adjusted() < -6:  # 0.000001 at the least: a smaller rate or value is a typing mistake
            self.fail(_l("%(what)s must be 0 or at least %(min)s.", what=what, min="0.000001"), at,
                      _l("Must be 0 or at least %(min)s.", min="0.000001"))
            return default
        return d

    def int(self, value, what, default: int, minimum: int = 0, maximum: int = MAX_POINTS, at: tuple = ()) -> int:
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.fail(_l("%(what)s must be a whole number of at least %(min)s.", what=what, min=minimum), at,
                      _l("Must be a whole number of at least %(min)s.", min=minimum))
            return default
        if value > maximum:
            self.fail(_l("%(what)s must be at most %(max)s.", what=what, max=f"{maximum:,}"), at,
                      _l("Must be at most %(max)s.", max=f"{maximum:,}"))
            return default
        return value

    def choice(self, value, what, choices, default: str, at: tuple = ()) -> str:
        if value is None:
            return default
        if value not in choices:
            self.fail(_l("%(what)s must be one of: %(values)s.", what=what, values=", ".join(choices)), at)
            return default
        return value

    def text(self, entry: dict, key: str, what, required: bool = True, limit: int = 200, at: tuple = ()) -> str:
        """``entry[key]`` stripped; ``at``: the path of ``entry`` (the key is added)."""
        v = entry.get(key, None if required else "")
        if not isinstance(v, str) or (required and not v.strip()) or len(v) > limit:
            label = TEXT_LABELS.get(key, key)
            blank = required and not (isinstance(v, str) and v.strip())
            self.fail(_l("%(what)s needs its %(field)s (1 to %(n)s characters).", what=what, field=label, n=limit)
                      if required else
                      _l("%(what)s: the %(field)s must be a text of at most %(n)s characters.", what=what,
                         field=label, n=limit),
                      (*at, key) if at else (),
                      _l("This field is required.") if blank else _l("At most %(n)s characters.", n=limit))
            return ""
        return v.strip()

    @staticmethod
    def date(value) -> dt.date | None:
        try:
            return dt.date.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None

    def table_list(self, key: str, what):
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(_l("%(what)s must be a list of tables.", what=what))
            return []
        return value

    def programme(self) -> Programme:
        d = self.data
        if not isinstance(d, dict):
            raise ProgrammeError([_l("The loyalty section must be a table.")])
        kw: dict = {}
        kw["rate"] = self.decimal(d.get("points_per_currency_unit"), _l("Points per currency unit"), Decimal("0.1"),
                                  at=("points_per_currency_unit",))
        rates = []
        for i, r in enumerate(self.table_list("earn_rates", _l("Earning rates")), 1):
            what = _l("Earning rate %(n)s", n=i)
            kind = self.text(r, "kind", what, required=False, limit=40)
            loc = self.text(r, "location", what, required=False, limit=40)
            rates.append((kind, loc, self.decimal(r.get("rate"), what, Decimal(0))))
            if r.get("rate") is None:
                self.fail(_l("%(what)s needs a rate.", what=what))
        kw["earn_rates"] = tuple(rates)
        cats = d.get("category_multipliers", {})
        if not isinstance(cats, dict):
            self.fail(_l("Category multipliers must be a table of department code = multiplier."))
            cats = {}
        kw["category_multipliers"] = {str(k): self.decimal(v, _l("Category multiplier %(code)s", code=k), Decimal(1))
                                      for k, v in cats.items()}
        flats = []
        for i, f in enumerate(self.table_list("flat_points", _l("Flat points")), 1):
            what = _l("Flat points %(n)s", n=i)
            flats.append((self.text(f, "kind", what, required=False, limit=40),
                          self.choice(f.get("per", "visit"), what, FLAT_PER, "visit"),
                          self.int(f.get("points"), what, 0)))
        kw["flat_points"] = tuple(flats)
        kw["pending_days"] = self.int(d.get("pending_days"), _l("Pending days"), 0, at=("pending_days",))
        if kw["pending_days"] > 366:
            self.fail(_l("Pending days must be at most %(n)s.", n=366), ("pending_days",),
                      _l("Must be at most %(max)s.", max=366))
        kw["expiry"] = self.choice(d.get("expiry"), _l("Expiry"), EXPIRY_RULES, "months", at=("expiry",))
        kw["expiry_months"] = self.int(d.get("expiry_months"), _l("Expiry months"), 24, 1, MAX_EXPIRY_MONTHS,
                                       at=("expiry_months",))
        kw["tier_measure"] = self.choice(d.get("tier_measure"), _l("Tier measure"), TIER_MEASURES, "points_earned",
                                         at=("tier_measure",))
        kw["evaluation_window"] = self.choice(d.get("evaluation_window"), _l("Evaluation window"),
                                              EVALUATION_WINDOWS, "rolling_12_months", at=("evaluation_window",))
        kw["tier_review"] = self.choice(d.get("tier_review"), _l("Tier review"), TIER_REVIEWS, "anniversary",
                                        at=("tier_review",))
        tiers, codes, last = [], set(), -1
        raw_tiers = self.table_list("tiers", _l("Tiers"))
        if not raw_tiers:
            self.fail(_l("At least one tier is needed."))
        elif len(raw_tiers) > MAX_TIERS:
            self.fail(_l("At most %(n)s tiers.", n=MAX_TIERS))
        for i, t in enumerate(raw_tiers, 1):
            what, at = _l("Tier %(n)s", n=i), ("tiers", i - 1)
            code = self.text(t, "code", what, limit=40, at=at)
            if code in codes:
                self.fail(_l("%(what)s repeats the code %(code)s.", what=what, code=code), (*at, "code"),
                          _l("Another tier has this code."))
            codes.add(code)
            # None when missing or refused: the comparisons below are only for a threshold read.
            threshold = self.int(t.get("threshold"), _l("Tier %(n)s threshold", n=i), None, maximum=MAX_THRESHOLD,
                                 at=(*at, "threshold"))
            if t.get("threshold") is None:
                self.fail(_l("%(what)s needs a threshold.", what=what), (*at, "threshold"),
                          _l("This field is required."))
            retention = self.int(t.get("retention_threshold"), _l("Tier %(n)s retention threshold", n=i), threshold,
                                 maximum=MAX_THRESHOLD, at=(*at, "retention_threshold"))
            if threshold is not None:
                if threshold <= last:
                    self.fail(_l("Tier thresholds must rise from one tier to the next."), (*at, "threshold"),
                              _l("Another tier has the same threshold.") if threshold == last else
                              _l("Must be higher than the threshold of the tier before it."))
                last = threshold
                if retention > threshold:  # a refused retention threshold came back as the threshold
                    self.fail(_l("%(what)s: the retention threshold cannot exceed the threshold.", what=what),
                              (*at, "retention_threshold"), _l("Cannot exceed the threshold."))
            threshold = threshold or 0
            retention = threshold if retention is None else retention
            discount = self.decimal(t.get("discount_percent"), _l("Tier %(n)s discount", n=i), Decimal(0),
                                    at=(*at, "discount_percent"))
            if discount > 100:
                self.fail(_l("%(what)s: the discount is a percentage from 0 to 100.", what=what),
                          (*at, "discount_percent"), _l("Must be a percentage from 0 to 100."))
            tiers.append(Tier(code, self.text(t, "name_zh", what, at=at), self.text(t, "name_en", what, at=at),
                              threshold, retention,
                              self.decimal(t.get("multiplier"), _l("Tier %(n)s points multiplier", n=i), Decimal(1),
                                           at=(*at, "multiplier")), discount,
                              self.text(t, "perks_zh", what, required=False, limit=500, at=at),
                              self.text(t, "perks_en", what, required=False, limit=500, at=at)))
        kw["tiers"] = tuple(tiers)
        promos = []
        for i, p in enumerate(self.table_list("promotions", _l("Promotions")), 1):
            what = _l("Promotion %(n)s", n=i)
            starts, ends = self.date(p.get("starts_on")), self.date(p.get("ends_on"))
            if starts is None or ends is None:
                self.fail(_l("%(what)s needs a first and a last day, dates such as \"2026-03-31\".", what=what))
                starts = ends = dt.date.min  # kept in the partial programme only, so the numbering holds
            elif ends < starts:
                self.fail(_l("%(what)s ends before it starts.", what=what))
            kinds = p.get("kinds", [])
            if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
                self.fail(_l("%(what)s: kinds must be a list of transaction kind codes.", what=what))
                kinds = []
            promos.append(Promotion(self.text(p, "code", what, limit=40), self.text(p, "name_zh", what),
                                    self.text(p, "name_en", what), starts, ends, tuple(kinds),
                                    self.decimal(p.get("multiplier"), what, Decimal(1)),
                                    self.int(p.get("bonus"), what, 0)))
        kw["promotions"] = tuple(promos)
        kw["birthday_bonus"] = self.int(d.get("birthday_bonus"), _l("Birthday bonus"), 0, at=("birthday_bonus",))
        referral = d.get("referral", {})
        if not isinstance(referral, dict):
            self.fail(_l("Referral must be a table."))
            referral = {}
        kw["referrer_points"] = self.int(referral.get("referrer_points"), _l("Referral points"), 0,
                                         at=("referral", "referrer_points"))
        kw["referred_points"] = self.int(referral.get("referred_points"), _l("Referral points"), 0,
                                         at=("referral", "referred_points"))
        kw["point_value"] = self.decimal(d.get("point_value"), _l("Value of a point"), Decimal("0.01"),
                                         at=("point_value",))
        kw["min_redeem_points"] = self.int(d.get("min_redeem_points"), _l("Minimum points to pay with"), 0,
                                           at=("min_redeem_points",))
        limits = d.get("adjust_limits", {})
        if not isinstance(limits, dict):
            self.fail(_l("Adjustment limits must be a table with staff and manager."))
            limits = {}
        kw["adjust_limits"] = {"staff": self.int(limits.get("staff"), _l("Adjustment limit"), 200,
                                                 at=("adjust_limits", "staff")),
                               "manager": self.int(limits.get("manager"), _l("Adjustment limit"), 5000,
                                                   at=("adjust_limits", "manager"))}
        kw["goodwill_budget"] = self.decimal(d.get("goodwill_budget"), _l("Goodwill budget"), Decimal(0),
                                             at=("goodwill_budget",))
        if self.problems:
            raise ProgrammeError(self.problems, Programme(**kw))
        return Programme(**kw)
