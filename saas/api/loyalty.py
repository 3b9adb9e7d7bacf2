"""Loyalty endpoints of the JSON API (issue 4): reverse a transaction's points, redeem
points (as payment or for a reward of the catalogue), void a redemption, and read a
customer's loyalty (balance, tier, progress, what expires).

The writes take an ``Idempotency-Key`` (see saas/api/idempotency.py) and act as the tenant:
no staff member unless the body names one by ``staff_email``. Refusals of the ledger carry
a machine code (``insufficient_points``, ``negative_balance``, ``already_voided`` ...) that
the 422 answer gives as ``error.code``, with the ledger's sentence as ``error.message``.
Imported at the bottom of saas/api/views.py (after saas/api/customers.py).
"""
from __future__ import annotations

import datetime as dt
import functools
import re

from flask import g, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.orm import Session

from saas import clock, db
from saas.api.customers import (
    REF_MAX,
    REF_PARAM,
    TRANSACTION,
    _amount_text,
    _by_code,
    _codes,
    _customer_by_ref,
    _customer_or_404,
    _staff_user_id,
    transaction_json,
)
from saas.api.idempotency import (
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_PARAM,
    idempotency_key,
    idempotent,
    request_hash,
    respond_once,
)
from saas.api.views import CODE, api, api_route
from saas.customers.models import Customer, Transaction
from saas.db import bound_tenant_id
from saas.errors import ValidationFailed
from saas.formatting import locale_code
from saas.loyalty import ledger, services
from saas.loyalty.models import LedgerEntry
from saas.loyalty.programme import MAX_POINTS
from saas.loyalty.sentences import keep_tier_sentence, next_tier_sentence
from saas.settings.models import Department, Location, TransactionKind
from saas.web import API, access, json_error

# Ledger field -> body field.
_BODY_FIELDS = {"reward": "reward_code"}
EARLIEST, LATEST = dt.date(1900, 1, 1), dt.date(9000, 12, 31)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


# --- schemas ---------------------------------------------------------------------------

STAFF_EMAIL = {"type": "string", "maxLength": 254,
               "description": "Email of an active staff member of the tenant who did this; default none "
                              "(the tenant's system)."}
REASON = {"type": "string", "maxLength": 255, "description": "Why (a refund, a cancellation ...); default empty."}
DATE = {"type": "string", "format": "date"}
MEASURE_VALUE = {"type": ["integer", "string"],
                 "description": "In the programme's measure: points or visits (an integer), or spend (a "
                                "decimal in the tenant's currency as text, e.g. \"1280.00\")."}

REVERSE_INPUT = api.schema("TransactionReverseInput", {
    "type": "object", "additionalProperties": False,
    "properties": {"reason": REASON, "staff_email": STAFF_EMAIL},
})

TRANSACTION_REVERSAL = api.schema("TransactionReversal", {
    "type": "object",
    "required": ["transaction", "reversed_on", "reason", "points_reversed", "customer_ref", "balance", "redeemable",
                 "tier"],
    "properties": {
        "transaction": TRANSACTION,
        "reversed_on": {**DATE, "description": "The business day of the reversal (the tenant's time zone)."},
        "reason": {"type": "string"},
        "points_reversed": {"type": "integer",
                            "description": "Points taken back from the transaction's customer (what it earned)."},
        "customer_ref": {"type": ["string", "null"]},
        "balance": {"type": "integer",
                    "description": "The customer's balance afterwards; negative when the points had been "
                                   "spent already (redemptions are refused until it is positive again)."},
        "redeemable": {"type": "integer", "description": "Points the customer can redeem now."},
        "tier": {"type": ["string", "null"],
                 "description": "Code of the customer's tier afterwards: lower than before when the "
                                "reversed transaction had carried an upgrade that no longer stands "
                                "(null: no tier)."},
    },
})

REDEMPTION_INPUT = api.schema("RedemptionInput", {
    "type": "object",
    "required": ["customer_ref"],
    "additionalProperties": False,
    "description": "Exactly one of `points` (points used as payment, worth the programme's value per "
                   "point) and `reward_code` (a reward of the catalogue, at its points cost).",
    "properties": {
        "customer_ref": {"type": "string", "minLength": 1, "maxLength": REF_MAX,
                         "description": "The ref of an existing customer."},
        "points": {"type": "integer", "minimum": 1, "maximum": MAX_POINTS,
                   "description": "Points to pay with (at least the programme's minimum)."},
        "reward_code": {"type": "string", "minLength": 1, "maxLength": 40,
                        "description": "Code of a reward of the tenant's catalogue."},
        "note": {"type": "string", "maxLength": 255},
        "location": {**CODE, "description": "Code of the active location where it is redeemed (rewards may "
                                            "be limited to some locations)."},
        "staff_email": STAFF_EMAIL,
    },
})

REDEMPTION = api.schema("Redemption", {
    "type": "object",
    "required": ["id", "customer_ref", "occurred_on", "points", "reward_code", "cash_value", "balance",
                 "redeemable"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The redemption's id (to void it)."},
        "customer_ref": {"type": ["string", "null"]},
        "occurred_on": DATE,
        "points": {"type": "integer", "description": "Points spent (a positive number)."},
        "reward_code": {"type": ["string", "null"], "description": "The reward redeemed; null for points as payment."},
        "cash_value": {"type": ["string", "null"],
                       "description": "What points used as payment were worth, e.g. \"12.00\"; null for a reward."},
        "balance": {"type": "integer", "description": "The customer's balance afterwards."},
        "redeemable": {"type": "integer", "description": "Points the customer can still redeem."},
    },
})

VOID_INPUT = api.schema("RedemptionVoidInput", {
    "type": "object", "additionalProperties": False,
    "properties": {"reason": REASON, "staff_email": STAFF_EMAIL},
})

REDEMPTION_VOID = api.schema("RedemptionVoid", {
    "type": "object",
    "required": ["id", "customer_ref", "voided_on", "points_restored", "balance", "redeemable"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The redemption's id."},
        "customer_ref": {"type": ["string", "null"],
                         "description": "The customer whose points these are now: for a redemption of a customer "
                                        "merged since, the surviving customer."},
        "voided_on": DATE,
        "points_restored": {"type": "integer",
                            "description": "Points given back, to exactly the lots the redemption took them from "
                                           "(which then move on to the surviving customer of a merge)."},
        "balance": {"type": "integer", "description": "That customer's balance afterwards."},
        "redeemable": {"type": "integer", "description": "Points the customer can redeem now."},
    },
})

LOYALTY = api.schema("CustomerLoyalty", {
    "type": "object",
    "required": ["customer_ref", "as_of", "balance", "redeemable", "redeemable_value", "pending", "pending_from",
                 "owed", "tier",
                 "measure", "qualifying", "window_start", "next_tier", "retention", "expiring"],
    "properties": {
        "customer_ref": {"type": ["string", "null"]},
        "as_of": {**DATE, "description": "The day the figures are for."},
        "balance": {"type": "integer", "description": "Sum of the customer's ledger entries (may be negative)."},
        "redeemable": {"type": "integer",
                       "description": "Points that can be redeemed on as_of (earned, past the pending period, "
                                      "not expired, after any debt)."},
        "redeemable_value": {"type": "string", "description": "What the redeemable points are worth as payment."},
        "pending": {"type": "integer", "description": "Points earned but still in the pending period."},
        "pending_from": {"type": ["string", "null"], "format": "date",
                         "description": "The first day some of the pending points become redeemable; null: none "
                                        "pending."},
        "owed": {"type": "integer",
                 "description": "Points owed after a refund of points already spent; redemptions are refused "
                                "while this is above 0."},
        "tier": {
            "type": ["object", "null"],
            "description": "The tier on as_of (every review due by then applied); null: none.",
            "required": ["code", "name_zh", "name_en", "since", "review_on", "discount_percent", "perks"],
            "properties": {
                "code": {"type": "string"},
                "name_zh": {"type": "string"},
                "name_en": {"type": "string"},
                "since": {"type": ["string", "null"], "format": "date"},
                "review_on": {"type": ["string", "null"], "format": "date",
                              "description": "When the tier is next reviewed (kept, or lowered by one level)."},
                "discount_percent": {"type": "string", "description": "e.g. \"10\"."},
                "perks": {"type": "string", "description": "The tier's perks in the answer's language."},
            },
        },
        "measure": {"type": "string", "enum": ["points_earned", "spend", "visits"],
                    "description": "What qualifies for tiers in this programme."},
        "qualifying": {**MEASURE_VALUE, "description": "The qualifying value in the evaluation window ending on "
                                                       "as_of (" + MEASURE_VALUE["description"] + ")"},
        "window_start": {**DATE, "description": "First day of that window."},
        "next_tier": {
            "type": ["object", "null"],
            "description": "The next tier up; null at the top.",
            "required": ["code", "name_zh", "name_en", "needed", "message"],
            "properties": {
                "code": {"type": "string"},
                "name_zh": {"type": "string"},
                "name_en": {"type": "string"},
                "needed": {**MEASURE_VALUE, "description": "How much more qualifies for it (0: reached, "
                                                           "upgraded at the next activity)."},
                "message": {"type": "string", "description": "The same, as a sentence in the answer's language."},
            },
        },
        "retention": {
            "type": ["object", "null"],
            "description": "What keeps the tier at its next review; null without a tier or review, or for "
                           "a tier kept with nothing to earn (the base tier).",
            "required": ["needed", "by", "message"],
            "properties": {
                "needed": {**MEASURE_VALUE, "description": "How much more, by `by`, keeps the tier (0: kept)."},
                "by": {**DATE, "description": "The last day that counts (the day before the review)."},
                "message": {"type": "string",
                            "description": "e.g. \"Needs 1,200 more points by 2027-03-31 to keep Gold\"; "
                                           "when kept: \"Enough to keep Gold at the review on 2027-04-01\"."},
            },
        },
        "expiring": {
            "type": "array",
            "description": "Points that expire within 90 days after as_of, by the first day they are gone.",
            "items": {"type": "object", "required": ["date", "points"],
                      "properties": {"date": DATE, "points": {"type": "integer"}}},
        },
    },
})

ID_PARAM = {"description": "The id the API answered when it was recorded.", "schema": {"type": "string",
                                                                                       "format": "uuid"}}


# --- helpers ---------------------------------------------------------------------------

def _today():
    return clock.today(g.tenant.timezone)


def _refused(exc: ValidationFailed):
    """A refusal of the ledger as the API answers it: the code, the sentence that says
    what is wrong as the message, the details per body field."""
    names = dict(_BODY_FIELDS)
    sent = request.get_json(silent=True)
    if isinstance(sent, dict) and "reward_code" in sent and "points" not in sent:
        names["points"] = "reward_code"  # the reward's cost is short: the body has no points field
    details: dict[str, list] = {}
    for field, messages in exc.errors.items():
        details.setdefault(names.get(field, field), []).extend(str(m) for m in messages)
    if exc.code == "validation_failed":
        return ValidationFailed(details)
    first = next((m for msgs in details.values() for m in msgs), None)
    body, status = json_error(422, exc.code, first or _("The request has invalid values."), details)
    return body, status


class _Refusal(Exception):
    def __init__(self, response):
        super().__init__(response)
        self.response = response


def _call(fn, *args, **kwargs):
    """``fn(...)``, a ledger refusal turned into the API's answer (raised as _Refusal)."""
    try:
        return fn(*args, **kwargs)
    except ValidationFailed as exc:
        out = _refused(exc)
        if isinstance(out, ValidationFailed):
            raise out from None
        raise _Refusal(out) from None


def _staff(s: Session, body: dict, errors: dict):
    if "staff_email" not in body:
        return None
    uid = _staff_user_id(s, body["staff_email"])
    if uid is None:
        errors.setdefault("staff_email", []).append(_l("No active staff member of this business has this email."))
    return uid


def _ref_of(s: Session, customer_id) -> str | None:
    return s.scalar(select(Customer.external_ref).where(Customer.id == customer_id))


def _idempotent_on(load):
    """Like ``@idempotent``, for an endpoint whose address names an object: ``load(s,
    **path args)`` finds it first (NotFound: 404, with or without a key, so another
    tenant's id is simply not found), then the Idempotency-Key is required and a retry
    answers the first response. The view gets the object as ``obj``."""

    def deco(view):
        @functools.wraps(view)
        def wrapper(body, **kwargs):
            s = db.session()
            obj = g.get("idempotent_object") or load(s, **kwargs)  # check_keys_first loaded it
            key = idempotency_key()
            digest = request_hash(body)

            def produce():
                try:
                    return view(body=body, obj=obj, **kwargs)
                except _Refusal as r:
                    return r.response

            return respond_once(s, key, digest, produce)

        wrapper.huitou_reads_first = True
        wrapper.huitou_idempotent = True  # the key before the body (check_keys_first) ...
        wrapper.huitou_idempotent_load = load  # ... and after the object is found
        return wrapper

    return deco


def _refusals_answered(view):
    """For ``@idempotent`` views: a _Refusal raised inside becomes its 422 answer (which
    the idempotency layer does not store)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except _Refusal as r:
            return r.response

    return wrapper


# --- reversing a transaction ---------------------------------------------------------------

def _load_transaction(s: Session, transaction_id) -> Transaction:
    return services.get_transaction(s, transaction_id)


@api_route("/transactions/<uuid:transaction_id>/reverse", ["POST"], "Reverse a refunded or cancelled transaction",
           request_schema=REVERSE_INPUT, response_schema=TRANSACTION_REVERSAL, endpoint="reverse_transaction",
           tags=["loyalty"],
           params={"transaction_id": ID_PARAM, IDEMPOTENCY_HEADER: IDEMPOTENCY_PARAM},
           description="Takes back exactly the points the transaction earned (the referral points it "
                       "triggered too). Points already spent leave the balance negative; redemptions are "
                       "then refused until it is positive again. A tier upgrade the transaction carried "
                       "is taken back when the customer's qualifying value in the window of that upgrade, "
                       "without it, falls short (to the tier before, or the highest tier still reached); "
                       "a tier review that has passed stands. Requires an `Idempotency-Key`; a retry "
                       "answers the first response. An unknown id is 404; a transaction reversed "
                       "before is 422 `already_reversed`.")
@access(API)
@_idempotent_on(_load_transaction)
def reverse_transaction(body, obj: Transaction, transaction_id):
    s = db.session()
    errors: dict[str, list] = {}
    staff = _staff(s, body, errors)
    if errors:
        raise ValidationFailed(errors)
    tx = services.get_transaction(s, obj.id, for_update=True)
    entries = _call(services.reverse, s, tx, staff, body.get("reason", ""), _today())
    customer = s.get(Customer, (bound_tenant_id(s), tx.customer_id))
    balance, redeemable = services.balances(s, tx.customer_id, _today())
    return {
        "transaction": transaction_json(tx, customer.external_ref, _codes(s, TransactionKind), _codes(s, Location),
                                        _codes(s, Department)),
        "reversed_on": tx.reversed_on.isoformat(),
        "reason": tx.reverse_reason or "",
        "points_reversed": -sum(e.points for e in entries if e.customer_id == tx.customer_id),
        "customer_ref": customer.external_ref,
        "balance": balance,
        "redeemable": redeemable,
        "tier": services.tier_code_of(s, tx.customer_id),
    }, 200


# --- redemptions -----------------------------------------------------------------------------

def redemption_json(s: Session, entry: LedgerEntry, customer_ref: str | None, reward_code: str | None,
                    as_of: dt.date) -> dict:
    balance, redeemable = services.balances(s, entry.customer_id, as_of)
    return {
        "id": str(entry.id),
        "customer_ref": customer_ref,
        "occurred_on": entry.occurred_on.isoformat(),
        "points": -entry.points,
        "reward_code": reward_code,
        "cash_value": _amount_text(entry.cash_value) if entry.cash_value is not None else None,
        "balance": balance,
        "redeemable": redeemable,
    }


@api_route("/redemptions", ["POST"], "Redeem a customer's points", request_schema=REDEMPTION_INPUT,
           response_schema=REDEMPTION, endpoint="create_redemption", tags=["loyalty"],
           params={IDEMPOTENCY_HEADER: IDEMPOTENCY_PARAM},
           success={201: "The points were redeemed (or, for a retry, had been)."},
           description="Spends points as payment (`points`) or on a reward of the catalogue (`reward_code`), "
                       "from the lots that expire soonest. Requires an `Idempotency-Key`; a retry answers "
                       "the first response. Refusals are 422 with `error.code`: `insufficient_points` (the redeemable balance "
                       "is short), `negative_balance` (the customer owes points after a refund), "
                       "`below_minimum` (fewer points than the programme's minimum), `reward_unavailable` "
                       "(inactive, out of stock, not at this location, or given only at some locations "
                       "and no `location` sent), `validation_failed` (an unknown "
                       "customer_ref, reward_code, location or staff_email, named in the details; both or "
                       "neither of points and reward_code).")
@access(API)
@idempotent
@_refusals_answered
def create_redemption(body):
    s = db.session()
    errors: dict[str, list] = {}

    def err(field, message):
        errors.setdefault(field, []).append(message)

    customer = _customer_by_ref(s, body["customer_ref"])
    if customer is None:
        err("customer_ref", _l("No customer has the ref %(ref)s.", ref=body["customer_ref"]))
    has_points, has_reward = "points" in body, "reward_code" in body
    if has_points and has_reward:
        err("", _l("Send either points or reward_code, not both."))
    elif not (has_points or has_reward):
        err("", _l("Send points (to pay with points) or reward_code (to redeem a reward)."))
    reward = None
    if has_reward:
        reward = services.reward_by_code(s, body["reward_code"])
        if reward is None:
            err("reward_code", _l("No reward has the code %(code)s.", code=body["reward_code"]))
    location_code = ""
    if "location" in body:
        location = _by_code(s, Location, body["location"])
        if location is None or not location.active:
            err("location", _l("No active location has the code %(code)s.", code=body["location"]))
        else:
            location_code = location.code
    staff = _staff(s, body, errors)
    if errors:
        raise ValidationFailed(errors)
    as_of = _today()
    entry = _call(ledger.redeem, s, services.programme_of(s), customer, as_of,
                  points=body.get("points"), reward=reward, staff_user_id=staff, note=body.get("note", ""),
                  location_code=location_code, idempotency_key=_ledger_key("redeem"))
    return redemption_json(s, entry, customer.external_ref, reward.code if reward else None, as_of), 201


def _ledger_key(action: str) -> str:
    """The ledger entry's own key for this request: the Idempotency-Key with its body's
    digest, so that a key used again after its record expired (``expire-idempotency-keys``)
    with another body is a new request, not an answer with the old entry."""
    return f"api:{action}:{idempotency_key()}:{g.idempotency.digest[:16]}"


def _load_redemption(s: Session, redemption_id) -> LedgerEntry:
    return services.get_redemption(s, redemption_id)


@api_route("/redemptions/<uuid:redemption_id>/void", ["POST"], "Void a redemption", request_schema=VOID_INPUT,
           response_schema=REDEMPTION_VOID, endpoint="void_redemption", tags=["loyalty"],
           params={"redemption_id": ID_PARAM, IDEMPOTENCY_HEADER: IDEMPOTENCY_PARAM},
           description="Gives the points back to exactly the lots the redemption took them from (a reward's "
                       "stock back too). Requires an `Idempotency-Key`; a retry answers the first response. "
                       "An unknown id is 404; a redemption voided before is 422 `already_voided`.")
@access(API)
@_idempotent_on(_load_redemption)
def void_redemption(body, obj: LedgerEntry, redemption_id):
    s = db.session()
    errors: dict[str, list] = {}
    staff = _staff(s, body, errors)
    if errors:
        raise ValidationFailed(errors)
    as_of = _today()
    void = _call(ledger.void_redemption, s, services.programme_of(s), obj, staff, body.get("reason", ""),
                 as_of)
    holder = ledger.survivor_of(s, obj.customer_id)
    balance, redeemable = services.balances(s, holder, as_of)
    return {"id": str(obj.id), "customer_ref": _ref_of(s, holder), "voided_on": void.occurred_on.isoformat(),
            "points_restored": void.points, "balance": balance, "redeemable": redeemable}, 200


# --- a customer's loyalty ----------------------------------------------------------------------

def _as_of_arg() -> dt.date:
    """Today, or the later day asked for: the figures look ahead from the books as they
    stand (reviews and expiry due by then); a past day's are not reconstructed."""
    raw = request.args.get("as_of", "").strip()
    today = _today()
    if not raw:
        return today
    try:  # YYYY-MM-DD only (fromisoformat also reads week dates such as 2026-W01-1)
        day = dt.date.fromisoformat(raw) if _DATE_RE.fullmatch(raw) else None
    except ValueError:
        day = None
    if day is None or not EARLIEST <= day <= LATEST:
        raise ValidationFailed.one("as_of", _l("Enter a date such as 2026-03-31."))
    if day < today:
        raise ValidationFailed.one("as_of", _l("Enter today (%(today)s) or a later day: the figures look ahead "
                                               "from the points as they stand now. The member statement shows "
                                               "a past period.", today=today.isoformat()))
    return day


def _measure_json(value, measure: str):
    if measure == "spend":
        return _amount_text(value)
    return int(value)


@api_route("/customers/<ref>/loyalty", ["GET"], "A customer's points, tier and what comes next",
           response_schema=LOYALTY, endpoint="get_customer_loyalty", tags=["loyalty"],
           params={**REF_PARAM,
                   "as_of": {"description": "The day to answer for, YYYY-MM-DD: today in the tenant's time "
                                            "zone (the default) or later. Tier reviews and expiry due by then "
                                            "are applied (read-only); a past day is 422.",
                             "schema": {"type": "string", "format": "date"}}},
           description="Balance, redeemable and pending points, debt after refunds, the tier with its "
                       "benefits, the qualifying value in the evaluation window, how much more reaches the "
                       "next tier and keeps the current one (and by when), and the points expiring in the "
                       "next 90 days. A malformed as_of, or one before today, is 422.")
@access(API)
def get_customer_loyalty(ref):
    s = db.session()
    customer = _customer_or_404(s, ref)
    as_of = _as_of_arg()
    programme = services.programme_of(s)
    sm = services.summary(s, programme, customer.id, as_of)
    locale = locale_code()
    measure = sm.measure
    tier = None
    if sm.tier is not None:
        tier = {"code": sm.tier.code, "name_zh": sm.tier.name_zh, "name_en": sm.tier.name_en,
                "since": sm.tier_since.isoformat() if sm.tier_since else None,
                "review_on": sm.review_on.isoformat() if sm.review_on else None,
                "discount_percent": format(sm.tier.discount_percent.normalize(), "f"),
                "perks": sm.tier.perks_for(locale)}
    next_tier = None
    if sm.next_tier is not None:
        next_tier = {"code": sm.next_tier.code, "name_zh": sm.next_tier.name_zh, "name_en": sm.next_tier.name_en,
                     "needed": _measure_json(sm.next_needed, measure),
                     "message": next_tier_sentence(measure, sm.next_needed, sm.next_tier.name_for(locale))}
    retention = None  # (as on the card: none for a tier kept with nothing to earn, such as the base tier)
    if sm.tier is not None and sm.keep_by is not None and (sm.keep_needed or sm.tier.retention_threshold):
        retention = {"needed": _measure_json(sm.keep_needed, measure), "by": sm.keep_by.isoformat(),
                     "message": keep_tier_sentence(measure, sm.keep_needed, sm.tier.name_for(locale),
                                                sm.keep_by)}
    return {
        "customer_ref": customer.external_ref,
        "as_of": as_of.isoformat(),
        "balance": sm.balance,
        "redeemable": sm.redeemable,
        "redeemable_value": _amount_text(sm.cash_value),
        "pending": sm.pending,
        "pending_from": sm.pending_from.isoformat() if sm.pending_from else None,
        "owed": sm.owed,
        "tier": tier,
        "measure": measure,
        "qualifying": _measure_json(sm.qualifying, measure),
        "window_start": sm.window_start.isoformat(),
        "next_tier": next_tier,
        "retention": retention,
        "expiring": [{"date": day.isoformat(), "points": pts} for day, pts in sm.expiring],
    }
