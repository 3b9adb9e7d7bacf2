"""The customer archive: finding, creating and editing customers, and recording their
transactions. Plain functions over a tenant-bound session; every check that protects
the data lives here, so the HTML views and the JSON API refuse the same things."""
from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from saas.customers.models import Customer, Transaction
from saas.db import bound_tenant_id
from saas.errors import NotFound, ValidationFailed
from saas.settings.models import Department, Location, TransactionKind

PER_PAGE = 50
# How many transactions the customer page lists (the totals always cover all of them).
RECENT_TRANSACTIONS = 100

CLASSIFICATIONS = {
    "important": _l("Important"),
    "general": _l("General"),
    "potential": _l("Potential"),
}

AMOUNT_MAX_DIGITS = 12
QUANTITY_MAX = 100_000
PHONE_RE = re.compile(r"^\+?[0-9]{3,20}$")
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
AMOUNT_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")

# Messages for a contact detail that already belongs to another customer; ``name`` is the
# other customer's name (the HTML view passes a link in its place).
DUPLICATE_MESSAGES = {
    "phone": lambda name: _l("This phone number already belongs to %(name)s.", name=name),
    "email": lambda name: _l("This email address already belongs to %(name)s.", name=name),
    "external_ref": lambda name: _l("This external reference already belongs to %(name)s.", name=name),
    "card_number": lambda name: _l("This card number already belongs to %(name)s.", name=name),
}


class DuplicateCustomer(ValidationFailed):
    """A create or edit was refused because a contact detail or key already belongs to
    another customer of the tenant; ``duplicates`` maps each field to that customer."""

    def __init__(self, errors: dict[str, list], duplicates: dict[str, Customer]):
        super().__init__(errors)
        self.duplicates = duplicates


# --- reading ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    items: list
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages


def normalise_phone(phone: str | None) -> str:
    """A phone number without the spaces, dashes, dots and brackets people type."""
    return re.sub(r"[\s\-().]", "", phone or "")


def mask_phone(phone: str | None) -> str:
    """A phone number with its middle hidden: 13812345678 -> 138****5678."""
    phone = phone or ""
    if len(phone) >= 8:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    if len(phone) > 2:
        return "*" * (len(phone) - 2) + phone[-2:]
    return phone


def search_customers(s: Session, query: str = "", page: int = 1, per_page: int = PER_PAGE) -> Page:
    """Customers matching ``query`` by any part of the phone number, the start of the
    name, the card number, the external reference or the email; all customers for an
    empty query. Ordered by name; ``page`` counts from 1 and is clamped to the range."""
    query = (query or "").replace("\x00", "").strip()[:100]
    q = select(Customer)
    if query:
        conditions = [
            func.lower(Customer.name).startswith(query.lower(), autoescape=True),
            Customer.card_number == query,
            Customer.external_ref == query,
            func.lower(Customer.email) == query.lower(),
        ]
        digits = normalise_phone(query)
        if re.fullmatch(r"\+?[0-9]+", digits):
            conditions.append(Customer.phone.contains(digits, autoescape=True))
        q = q.where(or_(*conditions))
    total = s.scalar(select(func.count()).select_from(q.subquery()))
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    items = list(s.scalars(q.order_by(Customer.name, Customer.id).offset((page - 1) * per_page).limit(per_page)))
    return Page(items=items, total=total, page=page, per_page=per_page)


def get_customer(s: Session, customer_id: uuid.UUID) -> Customer:
    """The bound tenant's customer with this id; raises NotFound otherwise (also for
    another tenant's customer)."""
    customer = s.get(Customer, (bound_tenant_id(s), customer_id))
    if customer is None:
        raise NotFound("customer")
    return customer


@dataclass(frozen=True)
class TransactionRow:
    transaction: Transaction
    kind: TransactionKind | None
    location: Location | None
    department: Department | None


@dataclass(frozen=True)
class TransactionHistory:
    rows: list[TransactionRow]
    count: int
    total: Decimal


def transaction_history(s: Session, customer: Customer, limit: int = RECENT_TRANSACTIONS) -> TransactionHistory:
    """The customer's latest transactions (newest first, at most ``limit``) with the count
    and the sum of all of them."""
    amounts = list(s.scalars(select(Transaction.amount).where(Transaction.customer_id == customer.id)))
    total = sum((Decimal(a) for a in amounts), Decimal("0.00")).quantize(Decimal("0.01"))
    txs = s.scalars(select(Transaction).where(Transaction.customer_id == customer.id)
                    .order_by(Transaction.occurred_on.desc(), Transaction.created_at.desc(), Transaction.id.desc())
                    .limit(limit))
    kinds = {k.id: k for k in s.scalars(select(TransactionKind))}
    locations = {x.id: x for x in s.scalars(select(Location))}
    departments = {x.id: x for x in s.scalars(select(Department))}
    rows = [TransactionRow(t, kinds.get(t.kind_id), locations.get(t.location_id), departments.get(t.department_id))
            for t in txs]
    return TransactionHistory(rows=rows, count=len(amounts), total=total)


# --- customers ------------------------------------------------------------------------

def _text(data: dict, key: str) -> str:
    # PostgreSQL cannot store NUL characters; nobody types them on purpose.
    value = data.get(key)
    return str(value).replace("\x00", "").strip() if value is not None else ""


def _entry(s: Session, model, raw, current: uuid.UUID | None = None):
    """The active entry (location, department, kind) of the bound tenant named by ``raw``
    (an id), None for an empty value; raises LookupError for anything else. ``current``
    is allowed even when inactive (a record keeps the entry it already has)."""
    if raw in (None, ""):
        return None
    try:
        entry_id = raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))
    except ValueError:
        raise LookupError(raw) from None
    entry = s.get(model, (bound_tenant_id(s), entry_id))
    if entry is None or (not entry.active and entry.id != current):
        raise LookupError(raw)
    return entry


def _clean_customer(s: Session, data: dict, existing: Customer | None) -> dict:
    errors: dict[str, list] = {}

    def err(field, message):
        errors.setdefault(field, []).append(message)

    clean = {key: _text(data, key) for key in
             ("name", "address_as", "phone", "email", "external_ref", "card_number", "classification", "notes")}
    clean["phone"] = normalise_phone(clean["phone"])
    clean["email"] = clean["email"].lower()
    clean["classification"] = clean["classification"] or "general"
    if not clean["name"]:
        err("name", _l("This field is required."))
    for key, limit in (("name", 120), ("address_as", 60), ("email", 254), ("external_ref", 64),
                       ("card_number", 40), ("notes", 2000)):
        if len(clean[key]) > limit:
            err(key, _l("At most %(n)s characters.", n=limit))
    for key in ("name", "address_as", "external_ref", "card_number"):
        if any(c in clean[key] for c in "<>"):
            err(key, _l("Use plain text: the characters < and > are not allowed."))
    if clean["phone"] and not PHONE_RE.match(clean["phone"]):
        err("phone", _l("Enter a phone number of 3 to 20 digits (a leading + is allowed)."))
    if clean["email"] and not EMAIL_RE.match(clean["email"]):
        err("email", _l("Enter a valid email address."))
    if clean["classification"] not in CLASSIFICATIONS:
        err("classification", _l("Choose one of the listed values."))
    try:
        location = _entry(s, Location, data.get("location_id"), existing.location_id if existing else None)
    except LookupError:
        err("location_id", _l("Choose one of the listed values."))
        location = None
    clean["location_id"] = location.id if location else None
    clean["external_ref"] = clean["external_ref"] or None
    clean["card_number"] = clean["card_number"] or None
    duplicates = find_duplicates(s, clean, existing)
    for key, other in duplicates.items():
        err(key, DUPLICATE_MESSAGES[key](other.name))
    if duplicates:
        raise DuplicateCustomer(errors, duplicates)
    if errors:
        raise ValidationFailed(errors)
    return clean


def find_duplicates(s: Session, data: dict, existing: Customer | None = None) -> dict[str, Customer]:
    """The other customers of the bound tenant that already have the phone, email,
    external reference or card number in ``data`` (by field; empty values are skipped)."""
    values = {
        "phone": normalise_phone(_text(data, "phone")),
        "email": _text(data, "email").lower(),
        "external_ref": _text(data, "external_ref"),
        "card_number": _text(data, "card_number"),
    }
    columns = {"phone": Customer.phone, "email": func.lower(Customer.email),
               "external_ref": Customer.external_ref, "card_number": Customer.card_number}
    duplicates: dict[str, Customer] = {}
    for key, value in values.items():
        if not value:
            continue
        q = select(Customer).where(columns[key] == value)
        if existing is not None:
            q = q.where(Customer.id != existing.id)
        other = s.scalars(q.order_by(Customer.name, Customer.id).limit(1)).first()
        if other is not None:
            duplicates[key] = other
    return duplicates


def _save(s: Session, customer: Customer) -> None:
    # The checks above read first; two requests saving the same card number or
    # reference at the same moment still meet the unique constraint, refused here.
    try:
        with s.begin_nested():
            s.add(customer)
            s.flush()
    except IntegrityError:
        raise ValidationFailed.one("", _l("Another customer with the same card number or reference was "
                                          "saved at the same moment. Check and try again.")) from None


def create_customer(s: Session, data: dict) -> Customer:
    """Create a customer of the bound tenant from form or API values.

    Raises ValidationFailed with per-field messages for bad values, and DuplicateCustomer
    when the phone, email, external reference or card number already belongs to another
    customer. Nothing is written when it raises.
    """
    clean = _clean_customer(s, data, None)
    customer = Customer(**clean)
    _save(s, customer)
    return customer


def update_customer(s: Session, customer: Customer, data: dict) -> Customer:
    """Change a customer; the same checks and errors as ``create_customer``."""
    clean = _clean_customer(s, data, customer)
    for key, value in clean.items():
        setattr(customer, key, value)
    _save(s, customer)
    return customer


# --- transactions ----------------------------------------------------------------------

def parse_amount(raw) -> Decimal:
    """An amount of money from what a user typed: at least 0, at most 2 decimal places and
    12 digits. Raises ValidationFailed on the field "amount"."""
    if isinstance(raw, Decimal):
        text = format(raw, "f")
    elif isinstance(raw, int) and not isinstance(raw, bool):
        text = str(raw)
    elif isinstance(raw, str):
        text = raw.strip().replace(",", "")
    else:
        raise ValidationFailed.one("amount", _l("Enter an amount such as 120 or 120.50."))
    if not text:
        raise ValidationFailed.one("amount", _l("This field is required."))
    if text.startswith("-"):
        raise ValidationFailed.one("amount", _l("The amount cannot be negative."))
    if not AMOUNT_RE.match(text):
        raise ValidationFailed.one("amount", _l("Enter an amount such as 120 or 120.50."))
    try:
        amount = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern above admits only numbers
        raise ValidationFailed.one("amount", _l("Enter an amount such as 120 or 120.50.")) from None
    if amount != amount.quantize(Decimal("0.01")):
        raise ValidationFailed.one("amount", _l("Use at most 2 decimal places."))
    amount = amount.quantize(Decimal("0.01"))
    if len(amount.as_tuple().digits) > AMOUNT_MAX_DIGITS:
        raise ValidationFailed.one("amount", _l("Use at most %(n)s digits.", n=AMOUNT_MAX_DIGITS))
    return amount


def parse_quantity(raw) -> int:
    """A whole quantity from 1 to QUANTITY_MAX; raises ValidationFailed on "quantity"."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        text = str(raw if raw is not None else "").strip()
        if not text:
            raise ValidationFailed.one("quantity", _l("This field is required."))
        if not text.isascii() or not text.isdigit():
            raise ValidationFailed.one("quantity", _l("Enter a whole number from %(min)s to %(max)s.",
                                                      min=1, max=QUANTITY_MAX))
        value = int(text)
    if not 1 <= value <= QUANTITY_MAX:
        raise ValidationFailed.one("quantity", _l("Enter a whole number from %(min)s to %(max)s.",
                                                  min=1, max=QUANTITY_MAX))
    return value


def default_kind(s: Session) -> TransactionKind | None:
    """The kind preselected when recording a transaction."""
    return s.scalars(select(TransactionKind).where(TransactionKind.active.is_(True))
                     .order_by(TransactionKind.is_default.desc(), TransactionKind.position)).first()


def record_transaction(s: Session, customer: Customer, data: dict, staff_user_id: uuid.UUID | None,
                       as_of: dt.date) -> Transaction:
    """Record a transaction of ``customer``: kind (required, active), occurred_on (a date
    not after ``as_of``), amount, quantity, optional location and department (active) and
    note. Raises ValidationFailed with a message per field; nothing is written then."""
    errors: dict[str, list] = {}

    def check(field, fn):
        try:
            return fn()
        except ValidationFailed as exc:
            errors.setdefault(field, []).extend(m for v in exc.errors.values() for m in v)
        except LookupError:
            errors.setdefault(field, []).append(_l("Choose one of the listed values."))
        return None

    kind = check("kind_id", lambda: _entry(s, TransactionKind, data.get("kind_id")))
    if kind is None and "kind_id" not in errors:
        errors["kind_id"] = [_l("This field is required.")]
    location = check("location_id", lambda: _entry(s, Location, data.get("location_id")))
    department = check("department_id", lambda: _entry(s, Department, data.get("department_id")))
    amount = check("amount", lambda: parse_amount(data.get("amount")))
    quantity = check("quantity", lambda: parse_quantity(data.get("quantity", 1)))
    occurred_on = data.get("occurred_on")
    if isinstance(occurred_on, str):
        try:
            occurred_on = dt.date.fromisoformat(occurred_on.strip())
        except ValueError:
            occurred_on = "invalid"
    if occurred_on is None or occurred_on == "":
        errors["occurred_on"] = [_l("This field is required.")]
    elif not isinstance(occurred_on, dt.date) or isinstance(occurred_on, dt.datetime):
        errors["occurred_on"] = [_l("Enter a date such as 2026-03-31.")]
    elif occurred_on > as_of:
        errors["occurred_on"] = [_l("The date cannot be in the future.")]
    elif occurred_on < dt.date(1900, 1, 1):
        errors["occurred_on"] = [_l("Enter a date such as 2026-03-31.")]
    note = _text(data, "note")
    if len(note) > 255:
        errors["note"] = [_l("At most %(n)s characters.", n=255)]
    if errors:
        raise ValidationFailed(errors)
    tx = Transaction(customer_id=customer.id, kind_id=kind.id, occurred_on=occurred_on, amount=amount,
                     quantity=quantity, location_id=location.id if location else None,
                     department_id=department.id if department else None,
                     staff_user_id=staff_user_id, note=note)
    s.add(tx)
    s.flush()
    return tx
