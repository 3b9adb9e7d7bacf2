"""Customers and their transactions over the API (issue 3): upsert a customer by the
tenant's own reference (the id in its PMS, DMS or core system), read and search
customers, record transactions with an Idempotency-Key, and list a customer's history.

Customers are addressed by ``ref`` (Customer.external_ref), never by a database id. The
checks are those of the customer services (saas.customers.services), so the API refuses
what the forms refuse; their field names are translated back to the body's (``location``
for ``location_id`` ...). Imported at the bottom of saas/api/views.py.
"""
from __future__ import annotations

from decimal import Decimal

from flask import g, request, url_for
from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from saas import clock, db
from saas.api.idempotency import IDEMPOTENCY_HEADER, IDEMPOTENCY_PARAM, begin_effect, check_keys_first, idempotent
from saas.api.views import CODE, api, api_route, bp
from saas.auth.models import Membership, User
from saas.customers import services
from saas.customers.models import Customer, Transaction
from saas.db import bound_tenant_id
from saas.errors import NotFound, ValidationFailed
from saas.loyalty import ledger as loyalty_ledger
from saas.loyalty import services as loyalty_services
from saas.settings.models import Department, Location, TransactionKind
from saas.web import API, access, json_error

check_keys_first(bp)

PER_PAGE = 50
REF_MAX = 64

# Customer fields the upsert takes as they are (the service checks them).
CUSTOMER_FIELDS = ("name", "address_as", "phone", "email", "card_number", "classification", "notes")
# Service field name -> body field name.
_BODY_FIELDS = {"external_ref": "ref", "location_id": "location", "kind_id": "kind",
                "department_id": "department", "staff_user_id": "staff_email"}

api.explain_pattern(r"^[^/]+$", _l("A reference cannot contain the character /."))


# --- schemas ---------------------------------------------------------------------------

REF = {"type": "string", "minLength": 1, "maxLength": REF_MAX, "pattern": r"^[^/]+$",
       "description": "The customer's id in the tenant's own system (PMS, DMS, core banking): "
                      "1 to 64 characters, no '/'."}

CUSTOMER = api.schema("Customer", {
    "type": "object",
    "required": ["ref", "name", "address_as", "phone", "email", "card_number", "classification",
                 "notes", "location", "created_at"],
    "properties": {
        "ref": {"type": ["string", "null"],
                "description": "The tenant's own reference; null for a customer created in Huitou without one."},
        "name": {"type": "string"},
        "address_as": {"type": "string", "description": "How staff greet the customer, e.g. 王先生, Mr. Wang."},
        "phone": {"type": "string"},
        "email": {"type": "string"},
        "card_number": {"type": ["string", "null"], "description": "Membership card number."},
        "classification": {"type": "string", "enum": list(services.CLASSIFICATIONS)},
        "notes": {"type": "string"},
        "location": {"type": ["string", "null"], "description": "Code of the customer's location."},
        "created_at": {"type": "string", "format": "date-time"},
    },
})

CUSTOMER_INPUT = api.schema("CustomerInput", {
    "type": "object",
    "required": ["ref"],
    "additionalProperties": False,
    "description": "Matched by ref: a new ref creates the customer (name is then required), a known "
                   "one updates it. Omitted fields keep their values; an empty string clears one.",
    "properties": {
        "ref": REF,
        "name": {"type": "string", "maxLength": 120},
        "address_as": {"type": "string", "maxLength": 60},
        "phone": {"type": "string", "maxLength": 40},
        "email": {"type": "string", "maxLength": 254},
        "card_number": {"type": ["string", "null"], "maxLength": 40},
        "classification": {"type": "string", "enum": list(services.CLASSIFICATIONS)},
        "notes": {"type": "string", "maxLength": 2000},
        "location": {"type": ["string", "null"], "maxLength": 40, "description": "Code of an active location; null or empty for none."},
    },
})

CUSTOMER_LIST = api.schema("CustomerList", {
    "type": "object",
    "required": ["items", "page", "per_page", "total"],
    "properties": {
        "items": {"type": "array", "items": CUSTOMER},
        "page": {"type": "integer"},
        "per_page": {"type": "integer"},
        "total": {"type": "integer", "description": "Matching customers on all pages."},
    },
})

TRANSACTION = api.schema("Transaction", {
    "type": "object",
    "required": ["id", "customer_ref", "occurred_on", "amount", "quantity", "kind", "location",
                 "department", "external_id", "note", "reversed_on"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "customer_ref": {"type": ["string", "null"]},
        "occurred_on": {"type": "string", "format": "date"},
        "amount": {"type": "string", "description": "Decimal in the tenant's currency, e.g. \"1280.00\"."},
        "quantity": {"type": "integer"},
        "kind": {"type": "string", "description": "Code of the transaction kind."},
        "location": {"type": ["string", "null"]},
        "department": {"type": ["string", "null"]},
        "external_id": {"type": ["string", "null"]},
        "note": {"type": "string"},
        "reversed_on": {"type": ["string", "null"], "format": "date",
                        "description": "The day it was refunded or cancelled (its points taken back); "
                                       "null while it stands."},
    },
})

TRANSACTION_INPUT = api.schema("TransactionInput", {
    "type": "object",
    "required": ["customer_ref", "occurred_on", "amount"],
    "additionalProperties": False,
    "properties": {
        "customer_ref": {"type": "string", "minLength": 1, "maxLength": REF_MAX,
                         "description": "The ref of an existing customer."},
        "occurred_on": {"type": "string", "format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                        "description": "YYYY-MM-DD, not in the future (the tenant's time zone)."},
        "amount": {"type": ["string", "number"], "maxLength": 20,
                   "description": "At least 0, at most 2 decimal places: \"120.50\" or 120.5."},
        "quantity": {"type": "integer", "minimum": 1, "maximum": services.QUANTITY_MAX,
                     "description": "Default 1."},
        "kind": {**CODE, "description": "Code of an active transaction kind; default the tenant's default kind."},
        "location": {**CODE, "description": "Code of an active location."},
        "department": {**CODE, "description": "Code of an active department."},
        "staff_email": {"type": "string", "maxLength": 254,
                        "description": "Email of an active staff member of the tenant who served the customer."},
        "external_id": {"type": "string", "minLength": 1, "maxLength": 64,
                        "description": "The transaction's id in the tenant's own system; unique per tenant."},
        "note": {"type": "string", "maxLength": 255},
    },
})
api.explain_pattern(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", _l("Enter a date such as 2026-03-31."))

# What recording a transaction answers: the transaction and the points it earned (issue 4).
TRANSACTION_RECORDED = api.schema("TransactionRecorded", {
    "allOf": [TRANSACTION, {
        "type": "object",
        "required": ["points_awarded", "balance", "tier"],
        "properties": {
            "points_awarded": {"type": "integer",
                               "description": "Points the transaction earned the customer (birthday and "
                                              "referral bonuses included; 0 when it earns none)."},
            "balance": {"type": "integer", "description": "The customer's points balance afterwards."},
            "tier": {"type": ["string", "null"],
                     "description": "Code of the customer's tier afterwards (null: the programme has none)."},
        },
    }],
})

TRANSACTION_LIST = api.schema("TransactionList", {
    "type": "object",
    "required": ["items", "page", "per_page", "total", "totals"],
    "properties": {
        "items": {"type": "array", "items": TRANSACTION, "description": "Newest first."},
        "page": {"type": "integer"},
        "per_page": {"type": "integer"},
        "total": {"type": "integer", "description": "The customer's transactions on all pages."},
        "totals": {
            "type": "object",
            "required": ["count", "amount", "reversed"],
            "properties": {"count": {"type": "integer", "description": "All the customer's transactions."},
                           "amount": {"type": "string",
                                      "description": "Sum of the amounts of the transactions not reversed "
                                                     "(a refund gave that money back)."},
                           "reversed": {"type": "integer",
                                        "description": "How many of them were reversed (refunded or cancelled)."}},
        },
    },
})

REF_PARAM = {"ref": {"description": "The customer's ref (its id in the tenant's own system).",
                     "schema": {"type": "string"}}}
PAGE_PARAM = {"page": {"description": "Page number, from 1 (clamped to the last page).",
                       "schema": {"type": "integer", "minimum": 1}}}


# --- helpers ---------------------------------------------------------------------------

def _page_arg() -> int:
    raw = request.args.get("page", "").strip()
    if not raw:
        return 1
    if not (raw.isascii() and raw.isdigit()):
        raise ValidationFailed.one("page", _l("Must be a whole number."))
    return max(1, int(raw)) if len(raw) <= 9 else 10**9


# Built once: every transaction pushed through the API looks its customer up.
_CUSTOMER_BY_REF = select(Customer).where(Customer.external_ref == bindparam("ref"))


def _customer_by_ref(s: Session, ref: str) -> Customer | None:
    """The bound tenant's customer with this ref; for a customer merged into another, the
    survivor (whose own ref may differ). None when there is none."""
    ref = (ref or "").strip()
    if not ref or len(ref) > REF_MAX:
        return None
    customer = s.scalar(_CUSTOMER_BY_REF, {"ref": ref})
    for _hop in range(10):  # merges re-point chains to the survivor; this is a safety net
        if customer is None or customer.merged_into_id is None:
            break
        customer = s.get(Customer, (bound_tenant_id(s), customer.merged_into_id))
    return customer


def _customer_or_404(s: Session, ref: str) -> Customer:
    customer = _customer_by_ref(s, ref)
    if customer is None:
        raise NotFound("customer")
    return customer


def _codes(s: Session, model) -> dict:
    return {e.id: e.code for e in s.scalars(select(model))}


def _by_code(s: Session, model, code: str | None):
    """The bound tenant's entry with ``code`` (active or not), or None."""
    if not code:
        return None
    return s.scalar(select(model).where(model.code == code))


def _body_errors(exc: ValidationFailed, extra: dict[str, list] | None = None) -> ValidationFailed:
    """The service's errors keyed by the body's field names, plus ``extra``."""
    errors: dict[str, list] = {}
    for field, messages in list(exc.errors.items()) + list((extra or {}).items()):
        errors.setdefault(_BODY_FIELDS.get(field, field), []).extend(messages)
    return ValidationFailed(errors, exc.code)


def _amount_text(amount) -> str:
    return format(Decimal(amount).quantize(Decimal("0.01")), "f")


def customer_json(c: Customer, location_codes: dict) -> dict:
    return {
        "ref": c.external_ref,
        "name": c.name,
        "address_as": c.address_as or "",
        "phone": c.phone or "",
        "email": c.email or "",
        "card_number": c.card_number,
        "classification": c.classification,
        "notes": c.notes or "",
        "location": location_codes.get(c.location_id),
        "created_at": c.created_at.isoformat(),
    }


def transaction_json(tx: Transaction, customer_ref: str | None, kinds: dict, locations: dict,
                     departments: dict) -> dict:
    return {
        "id": str(tx.id),
        "customer_ref": customer_ref,
        "occurred_on": tx.occurred_on.isoformat(),
        "amount": _amount_text(tx.amount),
        "quantity": tx.quantity,
        "kind": kinds.get(tx.kind_id),
        "location": locations.get(tx.location_id),
        "department": departments.get(tx.department_id),
        "external_id": tx.external_id,
        "note": tx.note or "",
        "reversed_on": tx.reversed_on.isoformat() if tx.reversed_on else None,
    }


# --- customers -------------------------------------------------------------------------

@api_route("/customers", ["POST"], "Create or update a customer by its ref",
           request_schema=CUSTOMER_INPUT, response_schema=CUSTOMER, endpoint="upsert_customer",
           tags=["customers"],
           success={200: "The customer was updated.", 201: "The customer was created."},
           description="Upsert by `ref`. A phone number, email or card number that already belongs to "
                       "another customer of the tenant is refused with 422 naming the field. A customer "
                       "whose personal data was erased is not updated: 422 with the code `customer_erased` "
                       "(erasure clears the ref, so the ref then creates a new customer).")
@access(API)
def upsert_customer(body):
    s = db.session()
    ref = body["ref"].strip()
    if not ref:
        raise ValidationFailed.one("ref", _l("This field is required."))
    existing = _customer_by_ref(s, ref)
    if existing is not None and existing.erased_at is not None:
        # Whatever the body holds would bring personal data back onto the anonymised record
        # (services.refuse_if_erased); transactions stay allowed.
        message = str(services.ERASED_MESSAGE)
        return json_error(422, "customer_erased", message, {"ref": [message]})
    # Only the fields sent: on an update the others keep their values.
    data = {k: body[k] for k in CUSTOMER_FIELDS if k in body}
    if "card_number" in data and data["card_number"] is None:
        data["card_number"] = ""
    if existing is None:
        data["external_ref"] = ref
    extra: dict[str, list] = {}
    if "location" in body:
        code = body["location"] or ""
        location = _by_code(s, Location, code)
        current = existing.location_id if existing is not None else None
        if code and (location is None or (not location.active and location.id != current)):
            extra["location"] = [_l("No active location has the code %(code)s.", code=code)]
        else:
            data["location_id"] = location.id if location else None
    try:
        if existing is None:
            customer, status = services.create_customer(s, data), 201
        else:
            customer, status = services.update_customer(s, existing, data), 200
    except ValidationFailed as exc:
        raise _body_errors(exc, extra) from None
    if extra:
        # The service accepted the rest; the request is refused as a whole (rolled back).
        raise ValidationFailed(extra)
    headers = {"Location": url_for("api.get_customer", ref=customer.external_ref)} if status == 201 else {}
    return customer_json(customer, _codes(s, Location)), status, headers


@api_route("/customers/<ref>", ["GET"], "One customer by its ref", response_schema=CUSTOMER,
           params=REF_PARAM, endpoint="get_customer", tags=["customers"])
@access(API)
def get_customer(ref):
    s = db.session()
    return customer_json(_customer_or_404(s, ref), _codes(s, Location))


@api_route("/customers", ["GET"], "Search customers", response_schema=CUSTOMER_LIST,
           endpoint="list_customers", tags=["customers"],
           params={"query": {"description": "Matches the start of the name, any part of the phone number, "
                                            "the card number, the ref or the email, as the search in the "
                                            "app does. Empty: all customers.",
                             "schema": {"type": "string"}},
                   **PAGE_PARAM},
           description=f"Ordered by name, {PER_PAGE} per page.")
@access(API)
def list_customers():
    s = db.session()
    result = services.search_customers(s, request.args.get("query", ""), _page_arg(), PER_PAGE)
    locations = _codes(s, Location)
    return {"items": [customer_json(c, locations) for c in result.items], "page": result.page,
            "per_page": result.per_page, "total": result.total}


# --- transactions ----------------------------------------------------------------------

def _amount_value(raw):
    """A JSON number as the text it was written as (the service parses text to Decimal)."""
    if isinstance(raw, float):
        return format(Decimal(repr(raw)), "f")
    return raw


def _staff_user_id(s: Session, email: str):
    email = email.strip().lower()
    if not email:
        return None
    return s.scalar(select(Membership.user_id).join(User, User.id == Membership.user_id)
                    .where(User.email == email, Membership.active.is_(True)))


@api_route("/transactions", ["POST"], "Record a transaction of a customer",
           request_schema=TRANSACTION_INPUT, response_schema=TRANSACTION_RECORDED, endpoint="create_transaction",
           tags=["transactions"], params={IDEMPOTENCY_HEADER: IDEMPOTENCY_PARAM},
           success={201: "The transaction was recorded (or, for a retry, had been)."},
           description="Requires an `Idempotency-Key` header (400 `idempotency_key_required` without it). "
                       "A retry with the same key and body answers the first response again; the same key "
                       "with a different body answers 409 `idempotency_key_reused`. An unknown "
                       "customer_ref, kind, location, department or staff_email is refused with 422 "
                       "naming the field. The transaction earns the customer points by the tenant's "
                       "loyalty programme at once; the answer says how many, the new balance and tier.")
@access(API)
@idempotent(effect_in_view=True)
def create_transaction(body):
    s = db.session()
    errors: dict[str, list] = {}

    def err(field, message):
        errors.setdefault(field, []).append(message)

    customer = _customer_by_ref(s, body["customer_ref"])
    if customer is None:
        err("customer_ref", _l("No customer has the ref %(ref)s.", ref=body["customer_ref"]))
    if "kind" in body:
        kind = _by_code(s, TransactionKind, body["kind"])
        if kind is None or not kind.active:
            err("kind", _l("No active transaction kind has the code %(code)s.", code=body["kind"]))
    else:
        kind = services.default_kind(s)
        if kind is None:
            err("kind", _l("This business has no active transaction kind to use by default; send kind."))
    location = _by_code(s, Location, body.get("location"))
    if "location" in body and (location is None or not location.active):
        err("location", _l("No active location has the code %(code)s.", code=body["location"]))
    department = _by_code(s, Department, body.get("department"))
    if "department" in body and (department is None or not department.active):
        err("department", _l("No active department has the code %(code)s.", code=body["department"]))
    staff_user_id = None
    if "staff_email" in body:
        staff_user_id = _staff_user_id(s, body["staff_email"])
        if staff_user_id is None:
            err("staff_email", _l("No active staff member of this business has this email."))
    external_id = (body.get("external_id") or "").strip() or None
    if external_id is not None and s.scalar(select(Transaction.id).where(Transaction.external_id == external_id)):
        err("external_id", _l("A transaction with this external id has already been recorded."))

    data = {
        "kind_id": kind.id if kind is not None else None,
        "location_id": location.id if location is not None else None,
        "department_id": department.id if department is not None else None,
        "amount": _amount_value(body["amount"]),
        "quantity": body.get("quantity", 1),
        "occurred_on": body["occurred_on"],
        "note": body.get("note", ""),
    }
    if errors:
        # Report the amount too, so one answer names everything that is wrong.
        try:
            services.parse_amount(data["amount"])
        except ValidationFailed as exc:
            errors.setdefault("amount", []).extend(m for v in exc.errors.values() for m in v)
        raise ValidationFailed(errors)
    today = clock.today(g.tenant.timezone)
    try:
        tx = services.new_transaction(s, customer, data, staff_user_id, today)
    except ValidationFailed as exc:
        raise _body_errors(exc) from None
    tx.external_id = external_id
    programme = loyalty_services.programme_of(s)
    referral = (loyalty_ledger.referral_of(s, customer.id)
                if programme.referrer_points or programme.referred_points else None)
    # The writes begin: on SQLite the lock is taken only now (the reads and checks above
    # stay outside it). What was read is kept (expire=False): the customer, kind, location
    # and department for their ids and codes, the programme as parsed, the referral; an
    # edit of one of them in between is as if it had come a moment later (a referral
    # recorded meanwhile is rewarded with the next transaction). The account, and whether
    # a referral's rewards were given, are read under the lock.
    begin_effect(expire=False)
    if external_id is None:
        services.add_transaction(s, tx)
    else:
        try:
            with s.begin_nested():
                services.add_transaction(s, tx)
        except IntegrityError:
            # Recorded at the same moment by another request with another key.
            raise ValidationFailed.one(
                "external_id", _l("A transaction with this external id has already been recorded.")) from None
    awarded = loyalty_services.award(s, tx, customer, staff_user_id, today, programme, fresh=True,
                                     referral=referral)
    # The codes of the entries looked up above (not every entry of each list: this is the hot path).
    codes = [{e.id: e.code} if e is not None else {} for e in (kind, location, department)]
    return {**transaction_json(tx, customer.external_ref, *codes),
            "points_awarded": awarded.points, "balance": awarded.balance, "tier": awarded.tier_code or None}, 201


@api_route("/customers/<ref>/transactions", ["GET"], "A customer's transactions, newest first",
           response_schema=TRANSACTION_LIST, params={**REF_PARAM, **PAGE_PARAM},
           endpoint="list_customer_transactions", tags=["transactions"],
           description=f"{PER_PAGE} per page; `totals` covers all of the customer's transactions, "
                       "its `amount` those not reversed.")
@access(API)
def list_customer_transactions(ref):
    s = db.session()
    customer = _customer_or_404(s, ref)
    where = Transaction.customer_id == customer.id
    count, total, reversed_ = services.transaction_totals(s, customer)
    pages = max(1, -(-count // PER_PAGE))
    page = min(_page_arg(), pages)
    txs = s.scalars(select(Transaction).where(where)
                    .order_by(Transaction.occurred_on.desc(), Transaction.created_at.desc(), Transaction.id.desc())
                    .offset((page - 1) * PER_PAGE).limit(PER_PAGE))
    kinds, locations, departments = _codes(s, TransactionKind), _codes(s, Location), _codes(s, Department)
    return {
        "items": [transaction_json(t, customer.external_ref, kinds, locations, departments) for t in txs],
        "page": page, "per_page": PER_PAGE, "total": count,
        "totals": {"count": count, "amount": _amount_text(total), "reversed": reversed_},
    }

