"""Industry presets (``tenants/<industry>.toml``): reading and checking them, and the
rules for the programme sections a tenant may edit afterwards."""
from __future__ import annotations

import tomllib
from decimal import Decimal, InvalidOperation
from pathlib import Path

from flask_babel import lazy_gettext as _l

from saas.config import ROOT
from saas.loyalty.programme import Problem, Programme, ProgrammeError
from saas.settings.models import CODE_RE, CODE_RULE

PRESET_DIR = ROOT / "tenants"
PROGRAMME_SECTIONS = ("loyalty", "churn", "surveys", "targets")


def preset_path(industry: str) -> Path:
    return PRESET_DIR / f"{industry}.toml"


def load_preset(industry: str) -> dict:
    """The parsed preset of ``industry``; raises FileNotFoundError for an unknown one."""
    with preset_path(industry).open("rb") as fh:
        return tomllib.load(fh)


def _decimal(value, errors: list, what: str, minimum: Decimal | None = None) -> None:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        errors.append(_l("%(what)s must be a number.", what=what))
        return
    if not d.is_finite() or (minimum is not None and d < minimum):
        errors.append(_l("%(what)s must be a number of at least %(min)s.", what=what, min=minimum))


def _int(value, errors: list, what: str, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        errors.append(_l("%(what)s must be a whole number of at least %(min)s.", what=what, min=minimum))


def _text(entry: dict, key: str, errors: list, what: str) -> None:
    v = entry.get(key)
    if not isinstance(v, str) or not v.strip() or len(v) > 200:
        errors.append(_l("%(what)s needs a text \"%(key)s\" of 1 to 200 characters.", what=what, key=key))


# The settings of the [loyalty] section, and of each entry of its lists and tables: any
# other key is a typing mistake (it would be kept and silently ignored).
LOYALTY_KEYS = {
    "": {"points_per_currency_unit", "earn_rates", "category_multipliers", "flat_points", "pending_days", "expiry",
         "expiry_months", "tier_measure", "evaluation_window", "tier_review", "tiers", "promotions",
         "birthday_bonus", "referral", "point_value", "min_redeem_points", "adjust_limits", "goodwill_budget"},
    "earn_rates": {"kind", "location", "rate"},
    "flat_points": {"kind", "per", "points"},
    "tiers": {"code", "name_zh", "name_en", "threshold", "retention_threshold", "multiplier", "discount_percent",
              "perks_zh", "perks_en"},
    "promotions": {"code", "name_zh", "name_en", "starts_on", "ends_on", "kinds", "multiplier", "bonus"},
    "referral": {"referrer_points", "referred_points"},
    "adjust_limits": {"staff", "manager"},
}


SECTION_KEYS = {
    "loyalty": LOYALTY_KEYS,
    "churn": {"": {"lost_after_months", "at_risk_gap_months"}},
    "surveys": {"": {"code", "name_zh", "name_en", "window_days", "satisfied_mark", "questions"},
                "questions": {"code", "zh", "en", "scale"}},
    "targets": {"": {"department", "measure", "completion_value", "target_value"}},
}


def _unknown_keys(data, allowed: dict) -> list:
    """Problems naming each key that is not a setting: ``allowed[""]`` for the keys of the
    section's table (of each table, for a section that is a list of them), ``allowed[name]``
    for those of the tables under the key ``name``."""
    def unknown(key):
        return _l("Unknown setting %(key)s: check its spelling.", key=key)

    problems = []
    for table in data if isinstance(data, list) else [data]:
        if not isinstance(table, dict):
            continue
        problems += [unknown(k) for k in table if k not in allowed[""]]
        for name, keys in allowed.items():
            value = table.get(name) if name else None
            entries = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
            problems += [unknown(f"{name}.{k}") for entry in entries if isinstance(entry, dict)
                         for k in entry if k not in keys]
    return problems


def validate_section(section: str, data, department_codes: set[str], kind_codes: set[str] | None = None) -> list:
    """Check one programme section; returns the list of problems (empty when valid).

    Stricter than reading a saved section (``Programme.from_data``), which must go on
    reading what earlier rules allowed: unknown keys, kinds the tenant does not have
    (``kind_codes``, when given), and multipliers or a point value of 0 are refused here."""
    errors: list = []
    if section == "loyalty":
        try:
            programme = Programme.from_data(data)
        except ProgrammeError as exc:
            # The checks below are said with the reader's problems, not after they are fixed.
            errors, programme = list(exc.problems), exc.partial
            if programme is None:
                return errors
        errors += _unknown_keys(data, LOYALTY_KEYS)
        for dept in programme.category_multipliers:
            if dept not in department_codes:
                errors.append(_l("Category multipliers name an unknown department: %(code)s.", code=dept))
        if kind_codes is not None:
            named = ({k for k, _loc, _r in programme.earn_rates} | {k for k, _per, _p in programme.flat_points}
                     | {k for p in programme.promotions for k in p.kinds}) - {""}
            for code in sorted(named - kind_codes):
                errors.append(_l("No transaction kind has the code %(code)s.", code=code))
        for i, tier in enumerate(programme.tiers, 1):
            if tier.code and not CODE_RE.match(tier.code):
                errors.append(Problem(_l("%(what)s: %(rule)s", what=_l("Tier %(n)s code", n=i), rule=CODE_RULE),
                                      ("tiers", i - 1, "code"), CODE_RULE))
            if tier.multiplier <= 0:
                errors.append(Problem(_l("Tier %(n)s points multiplier must be more than 0.", n=i),
                                      ("tiers", i - 1, "multiplier"), _l("Must be more than 0.")))
        for i, promo in enumerate(programme.promotions, 1):
            if promo.code and not CODE_RE.match(promo.code):
                errors.append(_l("%(what)s: %(rule)s", what=_l("Promotion %(n)s code", n=i), rule=CODE_RULE))
            if promo.multiplier <= 0:
                errors.append(_l("Promotion %(n)s multiplier must be more than 0.", n=i))
        if programme.point_value <= 0:
            errors.append(Problem(_l("Value of a point must be more than 0."), ("point_value",),
                                  _l("Must be more than 0.")))
    elif section == "churn":
        if not isinstance(data, dict):
            return [_l("The churn section must be a table.")]
        _int(data.get("lost_after_months"), errors, _l("Months without business before a customer is lost"), 1)
        _int(data.get("at_risk_gap_months"), errors, _l("Months of gap before a customer is at risk"), 1)
        if not errors and data["at_risk_gap_months"] >= data["lost_after_months"]:
            errors.append(_l("A customer must be at risk before being lost: the at-risk gap must be shorter."))
    elif section == "surveys":
        if not isinstance(data, list):
            return [_l("Surveys must be a list.")]
        for i, survey in enumerate(data, 1):
            what = _l("Survey %(n)s", n=i)
            if not isinstance(survey, dict):
                errors.append(_l("%(what)s must be a table.", what=what))
                continue
            for key in ("code", "name_zh", "name_en"):
                _text(survey, key, errors, what)
            _int(survey.get("window_days"), errors, what, 1)
            _int(survey.get("satisfied_mark"), errors, what, 1)
            questions = survey.get("questions")
            if not isinstance(questions, list) or not questions:
                errors.append(_l("%(what)s needs at least one question.", what=what))
                continue
            for q in questions:
                if not isinstance(q, dict):
                    errors.append(_l("%(what)s has a question that is not a table.", what=what))
                    continue
                for key in ("code", "zh", "en"):
                    _text(q, key, errors, what)
                _int(q.get("scale"), errors, what, 2)
    elif section == "targets":
        if not isinstance(data, list):
            return [_l("Targets must be a list.")]
        for i, target in enumerate(data, 1):
            what = _l("Target %(n)s", n=i)
            if not isinstance(target, dict):
                errors.append(_l("%(what)s must be a table.", what=what))
                continue
            if target.get("department") not in department_codes:
                errors.append(_l("%(what)s names an unknown department.", what=what))
            _text(target, "measure", errors, what)
            for key in ("completion_value", "target_value"):
                _decimal(target.get(key), errors, what, Decimal(0))
            try:
                if Decimal(str(target["completion_value"])) > Decimal(str(target["target_value"])):
                    errors.append(_l("%(what)s: the completion value cannot exceed the target value.", what=what))
            except (KeyError, InvalidOperation, ValueError):
                pass
    else:
        errors.append(_l("Unknown section."))
    if section != "loyalty" and section in SECTION_KEYS:
        errors += _unknown_keys(data, SECTION_KEYS[section])
    return errors
