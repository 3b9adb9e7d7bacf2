"""The customer archive: finding, creating and editing customers, and recording their
transactions. Plain functions over a tenant-bound session; every check that protects
the data lives here, so the HTML views and the JSON API refuse the same things."""
from __future__ import annotations

import datetime as dt
import functools
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import phonenumbers
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, func, literal_column, not_, or_, select, text, union, union_all
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from saas import clock
from saas.auth.models import Membership, Tenant, User
from saas.customers.models import ContactLog, Customer, CustomerContact, Preference, Transaction
from saas.customers.records import CONTACT_LOG_EDIT, write_audit
from saas.customers.records import member_names as user_names
from saas.db import bound_tenant_id, insert_now
from saas.errors import NotFound, ValidationFailed
from saas.migrate import PHONE_GRAM, PHONE_GRAMS_TABLE
from saas.settings.models import Department, Location, TransactionKind

PER_PAGE = 50
# A search counts its matches up to this many; past it the lists say "more than ..." (counting
# and sorting every customer whose name starts with 王 would cost more than the search).
SEARCH_COUNT_LIMIT = 1000
# How many transactions the customer page lists (the totals always cover all of them).
RECENT_TRANSACTIONS = 100

CLASSIFICATIONS = {
    "important": _l("Important"),
    "general": _l("General"),
    "potential": _l("Potential"),
}

GENDERS = {
    "female": _l("Female"),
    "male": _l("Male"),
    "other": _l("Other"),
}

COMPANY_SIZES = {
    "1-9": _l("1–9 people"),
    "10-49": _l("10–49 people"),
    "50-249": _l("50–249 people"),
    "250-999": _l("250–999 people"),
    "1000+": _l("1,000 people or more"),
}

PREFERENCE_CATEGORIES = {
    "room": _l("Room"),
    "food": _l("Food and drink"),
    "product": _l("Product"),
    "communication": _l("Communication"),
    "other": _l("Other"),
}

CONTACT_CHANNELS = {
    "call": _l("Call"),
    "visit": _l("Visit"),
    "message": _l("Message"),
    "email": _l("Email"),
}

TAGS_MAX = 10
TAG_MAX_LEN = 30
# How many preferences the guest card shows; the rest are on the customer page.
CARD_PREFERENCES = 6

AMOUNT_MAX_DIGITS = 12
QUANTITY_MAX = 100_000
PHONE_RE = re.compile(r"^\+?[0-9]{3,20}$")
PHONE_MESSAGE = _l("Enter a phone number such as 138 0013 8000, or with its country code such as +44 20 7946 0958.")
EMAIL_RE = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
AMOUNT_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")

# Messages for a contact detail that already belongs to another customer; ``name`` is the
# other customer's name (the HTML view passes a link in its place).
DUPLICATE_MESSAGES = {
    "phone": lambda name: _l("This phone number already belongs to %(name)s.", name=name),
    "phone_alt": lambda name: _l("This phone number already belongs to %(name)s.", name=name),
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
    # Set when a search found more than ``total`` (SEARCH_COUNT_LIMIT) matches: it stops counting there.
    more: bool = False

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


def tenant_country(s: Session) -> str:
    """The bound tenant's country (ISO 3166), the region of phone numbers typed without
    a country code."""
    tenant = s.get(Tenant, bound_tenant_id(s))
    return (tenant.country if tenant is not None and tenant.country else "CN").upper()


def parse_phone(raw: str | None, region: str) -> str:
    """A phone number in E.164 (+8613800138000) from what a person typed: spaces, dashes,
    dots and brackets are fine; without a leading + (or 00) the number is read as one of
    ``region``. "" for an empty value. Raises ValueError for anything that is not a valid
    phone number."""
    text = (raw or "").replace("\x00", "").strip()
    if not text:
        return ""
    if len(text) > 40 or not re.fullmatch(r"[0-9+\s\-().]+", text):
        raise ValueError(text)
    compact = normalise_phone(text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    try:
        number = phonenumbers.parse(compact, region)
    except phonenumbers.NumberParseException:
        raise ValueError(text) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(text)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def phone_variants(e164: str) -> set[str]:
    """The forms a stored number may have (E.164, and the national forms of numbers saved
    before phones were normalised), for finding a customer by an E.164 number."""
    if not e164:
        return set()
    variants = {e164}
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return variants
    national = phonenumbers.national_significant_number(number)
    variants |= {national, "0" + national, e164.lstrip("+"), "00" + e164.lstrip("+")}
    return variants


# A Chinese mobile number in E.164. Lists show one per row, and phonenumbers takes ~0.1 ms
# to format a number (most of the time of a 50-row search page): these are formatted
# directly, as phonenumbers does (tests/test_search.py compares the two), and any other
# number through a cache.
_CN_MOBILE = re.compile(r"\+86(1[3-9][0-9])([0-9]{4})([0-9]{4})")


def format_phone(phone: str | None, region: str = "CN") -> str:
    """A stored number as people read it: national format for the tenant's own country
    (138 0013 8000), international otherwise (+44 20 7946 0958); numbers saved before
    phones were normalised are shown as they are."""
    phone = phone or ""
    if not phone.startswith("+"):
        return phone
    if region == "CN" and (m := _CN_MOBILE.fullmatch(phone)):
        return " ".join(m.groups())
    return _format_e164(phone, region)


@functools.lru_cache(maxsize=20_000)
def _format_e164(phone: str, region: str) -> str:
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return phone
    if phonenumbers.region_code_for_number(number) == region:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def mask_phone(phone: str | None, region: str | None = None) -> str:
    """A phone number with its middle hidden: 13812345678 -> 138****5678. An E.164 number
    of ``region`` is masked in its national form (+8613812345678 -> 138****5678,
    +862038819962 -> 020****9962: the digits ``format_phone`` shows)."""
    phone = phone or ""
    if region and phone.startswith("+"):
        if region == "CN" and _CN_MOBILE.fullmatch(phone):
            phone = phone[3:]
        else:
            phone = _national_in(phone, region)
    if len(phone) >= 8:
        return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]
    if len(phone) > 2:
        return "*" * (len(phone) - 2) + phone[-2:]
    return phone


@functools.lru_cache(maxsize=20_000)
def _national_in(phone: str, region: str) -> str:
    """The digits of an E.164 number of ``region`` as dialled there (with the trunk
    prefix: 020 3881 9962 -> 02038819962, as ``format_phone`` shows it); the number
    unchanged when it is of another region or unreadable."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return phone
    if phonenumbers.region_code_for_number(number) == region:
        return re.sub(r"\D", "", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL))
    return phone


def normalise_plate(plate: str | None) -> str:
    """A licence plate as stored: upper case, without spaces, dots or dashes (沪A·12345 ->
    沪A12345)."""
    return re.sub(r"[\s\-·.]", "", (plate or "").replace("\x00", "")).upper()


def _next_string(value: str) -> str | None:
    """The least string greater than every string starting with ``value`` (by code
    point), or None when there is none."""
    while value:
        last = ord(value[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:
            last = 0xE000
        if last <= 0x10FFFF:
            return value[:-1] + chr(last)
        value = value[:-1]
    return None


# PostgreSQL and row-level security: the app role's conditions can drive an index only when
# their operators are LEAKPROOF (otherwise they must wait until the tenant policy has
# filtered the rows, i.e. after a scan of the tenant's rows). =, <, >= and starts_with (^@)
# on text are; lower(), LIKE and the pg_trgm operators are not. So on PostgreSQL the search
# uses name ^@ / phone ^@ / email = where it can (btree ranges in a C-collated database),
# and "any part of the phone" (LIKE '%...%', the pg_trgm GIN indexes) and case-insensitive
# names use their indexes only where a superuser has declared textlike() and lower()
# LEAKPROOF (see tests/test_search.py) — a scan of the tenant's rows otherwise.

def _name_starts(s: Session, query: str):
    """The condition "lower(name) starts with lower(query)": on SQLite a code-point range
    on ix_customers_tenant_lower_name (exactly the prefix, and the index alone answers it);
    on PostgreSQL name ^@ query when the query has no upper/lower case (Chinese names,
    digits), a range of ix_customers_tenant_name, else lower(name) LIKE 'x%'."""
    lowered = query.lower()
    column = func.lower(Customer.name)
    if s.get_bind().dialect.name == "sqlite":
        cond = column >= lowered
        upper = _next_string(lowered)
        return and_(cond, column < upper) if upper is not None else cond
    if lowered == query.upper():
        return Customer.name.op("^@", is_comparison=True)(query)
    return column.startswith(lowered, autoescape=True)


def _starts(s: Session, column, value: str):
    """``column`` starts with ``value``: on SQLite a range on the index and LIKE (SQLite
    does not use an index for LIKE here; the range compares code points like LIKE does, so
    it only narrows); on PostgreSQL starts_with (^@, leakproof and a btree range)."""
    if s.get_bind().dialect.name != "sqlite":
        return column.op("^@", is_comparison=True)(value)
    cond = and_(column >= value, column.startswith(value, autoescape=True))
    upper = _next_string(value)
    return and_(column < upper, cond) if upper is not None else cond


PHONE_ROWIDS_LIMIT = 2000


def _phone_matches(s: Session, digits: str, region: str | None) -> tuple[list, object | None]:
    """Conditions on the customers whose phone numbers match what staff typed (digits,
    maybe with a leading +): any part of either number for 3 digits or more (a trigram
    index: FTS5 on SQLite, pg_trgm on PostgreSQL), the start of the number for a leading
    + or for 1-2 digits, and the international form of a number typed with its trunk
    prefix (021 6666 -> +86216666...) or with 00 (0044... -> +44...). Returns the
    conditions on the start of the numbers and the condition on any part (or None)."""
    sqlite = s.get_bind().dialect.name == "sqlite"
    prefixes = []
    anywhere = None
    if digits.startswith("+"):
        prefixes.append(digits)  # only an E.164 number has a +, at its start
    else:
        if len(digits) >= 3:
            anywhere = digits
        else:
            prefixes.append(digits)  # numbers saved before phones were normalised
        code = None
        if digits.startswith("00") and len(digits) > 4:
            prefixes.append("+" + digits[2:])  # 0044... dialled the international way
        elif digits.startswith("0") and len(digits) > 1:
            # A national number with its trunk prefix: stored as +<country code><rest>.
            code = phonenumbers.country_code_for_region(region or tenant_country(s))
            if code:
                prefixes.append(f"+{code}{digits[1:]}")
        elif len(digits) < 3:
            # Too short for the trigram index: the start of the national number.
            code = phonenumbers.country_code_for_region(region or tenant_country(s))
            if code:
                prefixes.append(f"+{code}{digits}")
    matches = []
    anywhere_cond = None
    if anywhere is not None:
        if sqlite:
            # customer_phone_search: FTS5 trigram index of phone and phone_alt (migration
            # 0004), whose rowids are the customers' rowids; a quoted phrase matches it
            # anywhere in either number.
            # The index holds every tenant's numbers: look it up once, for this tenant, and
            # hand the two statements of the search the rowids (the subquery itself when
            # there are too many, e.g. three digits that every mobile number has).
            phrase = f'"{anywhere}"'
            rowids = _phone_gram_candidates(s, anywhere) if len(anywhere) >= PHONE_GRAM else None
            if rowids is not None:
                rowid = literal_column("customers.rowid")
                in_number = or_(Customer.phone.contains(anywhere, autoescape=True),
                                Customer.phone_alt.contains(anywhere, autoescape=True))
                anywhere_cond = and_(rowid.in_(rowids), in_number) if rowids else None
                return _with_prefixes(s, matches, prefixes), anywhere_cond
            rowids = s.execute(text(
                "SELECT customers.rowid FROM customer_phone_search JOIN customers "
                "ON customers.rowid = customer_phone_search.rowid "
                "WHERE customer_phone_search MATCH :phrase AND customers.tenant_id = :tenant LIMIT :limit"),
                {"phrase": phrase, "tenant": bound_tenant_id(s).hex, "limit": PHONE_ROWIDS_LIMIT + 1}).scalars().all()
            rowid = literal_column("customers.rowid")
            if len(rowids) <= PHONE_ROWIDS_LIMIT:
                anywhere_cond = rowid.in_(rowids) if rowids else None
            else:
                fts = text("SELECT rowid FROM customer_phone_search WHERE customer_phone_search MATCH :phone_phrase")
                anywhere_cond = rowid.in_(fts.bindparams(phone_phrase=phrase))
        else:
            # The pg_trgm GIN indexes ix_customers_phone_trgm / ix_customers_phone_alt_trgm.
            anywhere_cond = or_(Customer.phone.contains(anywhere, autoescape=True),
                                Customer.phone_alt.contains(anywhere, autoescape=True))
    return _with_prefixes(s, matches, prefixes), anywhere_cond


def _with_prefixes(s: Session, matches: list, prefixes: list) -> list:
    for p in prefixes:
        matches += [_starts(s, Customer.phone, p), _starts(s, Customer.phone_alt, p)]
    return matches


def _phone_gram_candidates(s: Session, digits: str) -> list | None:
    """SQLite: the rowids of the tenant's customers whose numbers hold the last four
    characters of ``digits`` (customer_phone_grams, migration 0006); None when there are
    too many to pass on, and the trigram index serves instead."""
    rowids = s.execute(text(
        f"SELECT customer_rowid FROM {PHONE_GRAMS_TABLE} WHERE tenant_id = :tenant AND gram = :gram LIMIT :limit"),
        {"tenant": bound_tenant_id(s).hex, "gram": digits[-PHONE_GRAM:],
         "limit": PHONE_ROWIDS_LIMIT + 1}).scalars().all()
    return rowids if len(rowids) <= PHONE_ROWIDS_LIMIT else None


def search_customers(s: Session, query: str = "", page: int = 1, per_page: int = PER_PAGE,
                     region: str | None = None) -> Page:
    """Customers matching ``query`` by any part of the phone numbers (as typed by staff:
    "13800", "0138", "138 0013"), the start of the name, the card number, the external
    reference, the email or the plate number; all customers for an empty query. Ordered
    by name (lower(name), name, id); ``page`` counts from 1 and is clamped to the range.
    ``region`` (default: the tenant's country) reads a number typed with its trunk prefix
    (021 6666 8888). A search counts at most SEARCH_COUNT_LIMIT matches: past that,
    ``total`` is the limit, ``more`` is set and the pages stop there."""
    query = (query or "").replace("\x00", "").strip()[:100]
    order = (func.lower(Customer.name), Customer.name, Customer.id)
    # The matches by name: read, counted and paged in the order of ix_customers_tenant_lower_name.
    named = select(Customer.id).where(Customer.merged_into_id.is_(None))
    if not query:
        total = s.scalar(select(func.count()).select_from(named.subquery()))
        page = min(max(1, page), max(1, -(-total // per_page)))
        window = named.order_by(*order).offset((page - 1) * per_page).limit(per_page)
        items = list(s.scalars(select(Customer).where(Customer.id.in_(window)).order_by(*order)))
        return Page(items=items, total=total, page=page, per_page=per_page)

    ql = query.lower()
    sqlite = s.get_bind().dialect.name == "sqlite"
    name_cond = _name_starts(s, query)
    named = named.where(name_cond)
    # Every other kind of match, OR-ed: each term can seek its own index (SQLite's
    # multi-index OR, PostgreSQL's BitmapOr); less the customers that match by name too
    # (counted there).
    matches = [
        Customer.card_number == query,
        Customer.external_ref == query,
        # Emails are stored in lower case; SQLite has an index on lower(email) for older rows.
        func.lower(Customer.email) == ql if sqlite else Customer.email == ql,
    ]
    plate = normalise_plate(query)
    if plate:
        matches.append(Customer.plate_number == plate)
        if len(plate) >= 3:
            matches.append(_starts(s, Customer.plate_number, plate))
    digits = normalise_phone(query)
    if re.fullmatch(r"\+?[0-9]+", digits):
        prefix_conds, anywhere = _phone_matches(s, digits, region)
        matches += prefix_conds
    else:
        anywhere = None
    if sqlite:
        match = or_(*matches, *([anywhere] if anywhere is not None else []))
    else:
        # Apart, so that the leakproof conditions keep their BitmapOr of indexes.
        arms = [select(Customer.id).where(or_(*matches))]
        if anywhere is not None:
            arms.append(select(Customer.id).where(anywhere))
        match = Customer.id.in_(union(*arms)) if len(arms) > 1 else or_(*matches)
    others = select(Customer.id).where(Customer.merged_into_id.is_(None), not_(name_cond), match)

    def counted(q):
        return select(func.count()).select_from(q.limit(SEARCH_COUNT_LIMIT + 1).subquery()).scalar_subquery()

    by_name, by_other = s.execute(select(counted(named), counted(others))).one()
    total = by_name + by_other
    more = total > SEARCH_COUNT_LIMIT
    if more:
        total = SEARCH_COUNT_LIMIT
    page = min(max(1, page), max(1, -(-total // per_page)))
    offset = (page - 1) * per_page
    size = min(per_page, total - offset) if more else per_page  # the last page stops at the cap
    if by_other:
        # The page is among the first offset + per_page of either kind.
        first = offset + per_page
        window = union_all(select(named.order_by(*order).limit(first).subquery().c.id),
                           select(others.order_by(*order).limit(first).subquery().c.id))
        q = select(Customer).where(Customer.id.in_(window)).order_by(*order).offset(offset).limit(size)
    else:
        window = named.order_by(*order).offset(offset).limit(size)
        q = select(Customer).where(Customer.id.in_(window)).order_by(*order)
    items = list(s.scalars(q))
    return Page(items=items, total=total, page=page, per_page=per_page, more=more)


def get_customer(s: Session, customer_id: uuid.UUID) -> Customer:
    """The bound tenant's customer with this id; raises NotFound otherwise (also for
    another tenant's customer)."""
    customer = s.get(Customer, (bound_tenant_id(s), customer_id))
    if customer is None:
        raise NotFound("customer")
    return customer


# Refused for a customer whose personal data was erased (PIPL/GDPR; records.erase_customer).
ERASED_MESSAGE = _l("This customer's personal data was erased; nothing new can be recorded about them.")


def refuse_if_erased(customer: Customer) -> None:
    """Raise ValidationFailed (code "customer_erased", a message for the whole form) when
    the customer's personal data was erased: a profile edit, a decision maker, a
    preference or a contact log entry would bring personal data back onto the anonymised
    record. Transactions stay allowed (the books keep them)."""
    if customer.erased_at is not None:
        raise ValidationFailed.one("", ERASED_MESSAGE, code="customer_erased")


MERGED_MESSAGE = _l("This customer was merged into another one: record this on the surviving customer.")


def refuse_if_merged(customer: Customer) -> None:
    """Raise ValidationFailed (code "customer_merged", for the whole form) for a customer
    merged into another: a transaction or points recorded on the duplicate would stay on
    a record that searches no longer show, apart from the survivor's."""
    if customer.merged_into_id is not None:
        raise ValidationFailed.one("", MERGED_MESSAGE, code="customer_merged")


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
    total: Decimal  # of the transactions not reversed (a refund gave the money back)
    reversed: int = 0


def _transaction_rows(s: Session, customer: Customer, limit: int, kept_only: bool = False) -> list[TransactionRow]:
    """The customer's latest transactions (``kept_only``: not reversed), newest first, with
    kind, location, department."""
    q = select(Transaction).where(Transaction.customer_id == customer.id)
    if kept_only:
        q = q.where(Transaction.reversed_on.is_(None))
    txs = list(s.scalars(q.order_by(Transaction.occurred_on.desc(), Transaction.created_at.desc(),
                                    Transaction.id.desc()).limit(limit)))
    if not txs:
        return []
    kinds = {k.id: k for k in s.scalars(select(TransactionKind).where(
        TransactionKind.id.in_({t.kind_id for t in txs})))}
    locations = _locations_by_id(s, (t.location_id for t in txs))
    dept_ids = {t.department_id for t in txs if t.department_id}
    departments = ({d.id: d for d in s.scalars(select(Department).where(Department.id.in_(dept_ids)))}
                   if dept_ids else {})
    return [TransactionRow(t, kinds.get(t.kind_id), locations.get(t.location_id), departments.get(t.department_id))
            for t in txs]


def transaction_history(s: Session, customer: Customer, limit: int = RECENT_TRANSACTIONS) -> TransactionHistory:
    """The customer's latest transactions (newest first, at most ``limit``) with the count
    of all of them, the sum of those not reversed and how many were reversed."""
    count, total, reversed_ = transaction_totals(s, customer)
    return TransactionHistory(rows=_transaction_rows(s, customer, limit), count=count,
                              total=total, reversed=reversed_)


def transaction_totals(s: Session, customer: Customer) -> tuple[int, Decimal, int]:
    """How many transactions the customer has, the sum of those not reversed (a refund
    gave the money back) and how many were reversed; the guest card and the API agree."""
    kept = Transaction.reversed_on.is_(None)
    count, total, reversed_ = s.execute(
        select(func.count(Transaction.id), func.coalesce(func.sum(case((kept, Transaction.amount))), 0),
               func.count(case((~kept, 1))))
        .where(Transaction.customer_id == customer.id)).one()
    return count, Decimal(total).quantize(Decimal("0.01")), reversed_


def last_visit(s: Session, customer: Customer) -> TransactionRow | None:
    """The customer's latest transaction with its kind, location and department (not one
    reversed: a refunded or cancelled visit did not happen)."""
    rows = _transaction_rows(s, customer, 1, kept_only=True)
    return rows[0] if rows else None


def active_members(s: Session) -> list[User]:
    """The bound tenant's active members (the staff who can own customers), by name."""
    q = (select(User).join(Membership, Membership.user_id == User.id)
         .where(Membership.active.is_(True)).order_by(User.name, User.id))
    return list(s.scalars(q))


# --- customers ------------------------------------------------------------------------

def _text(data: dict, key: str) -> str:
    # PostgreSQL cannot store NUL characters; nobody types them on purpose.
    value = data.get(key)
    return str(value).replace("\x00", "").strip() if value is not None else ""


def _flag(data: dict, key: str) -> bool:
    value = data.get(key)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "y", "yes", "on", "true")
    return bool(value)


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


def _member(s: Session, raw, current: uuid.UUID | None = None) -> uuid.UUID | None:
    """The id of an active member of the bound tenant named by ``raw``, None for an empty
    value; raises LookupError otherwise. ``current`` (the owner a customer already has)
    is kept even when that member has since been deactivated."""
    if raw in (None, ""):
        return None
    try:
        user_id = raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))
    except ValueError:
        raise LookupError(raw) from None
    if user_id == current:
        return user_id
    found = s.scalar(select(Membership.user_id).where(Membership.user_id == user_id, Membership.active.is_(True)))
    if found is None:
        raise LookupError(raw)
    return user_id


def parse_tags(raw) -> list[str]:
    """Tags from a comma-separated text (also ，、;) or a list: trimmed, without empty
    ones and repeats (ignoring case), at most TAGS_MAX of TAG_MAX_LEN characters each.
    Raises ValidationFailed on "tags"."""
    if raw is None:
        items = []
    elif isinstance(raw, (list, tuple)):
        items = [str(x) for x in raw]
    else:
        items = re.split(r"[,，、;；]", str(raw))
    tags: list[str] = []
    seen = set()
    for item in items:
        tag = " ".join(item.replace("\x00", "").split())
        if tag and tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
    errors = []
    if len(tags) > TAGS_MAX:
        errors.append(_l("At most %(n)s tags.", n=TAGS_MAX))
    if any(len(t) > TAG_MAX_LEN for t in tags):
        errors.append(_l("A tag has at most %(n)s characters.", n=TAG_MAX_LEN))
    if any(c in t for t in tags for c in "<>"):
        errors.append(_l("Use plain text: the characters < and > are not allowed."))
    if errors:
        raise ValidationFailed({"tags": errors})
    return tags


def parse_birthday(raw, as_of: dt.date) -> dt.date | None:
    """A birthday (a date or YYYY-MM-DD) not after ``as_of`` nor before 1900; None for an
    empty value. Raises ValidationFailed on "birthday"."""
    if raw in (None, ""):
        return None
    if isinstance(raw, str):
        try:
            raw = dt.date.fromisoformat(raw.strip())
        except ValueError:
            raise ValidationFailed.one("birthday", _l("Enter a date such as 1980-05-17.")) from None
    if not isinstance(raw, dt.date) or isinstance(raw, dt.datetime) or raw < dt.date(1900, 1, 1):
        raise ValidationFailed.one("birthday", _l("Enter a date such as 1980-05-17."))
    if raw > as_of:
        raise ValidationFailed.one("birthday", _l("The birthday cannot be in the future."))
    return raw


# Profile fields: (key, max length, plain text only).
_TEXT_FIELDS = (
    ("name", 120, True), ("address_as", 60, True), ("email", 254, False), ("external_ref", 64, True),
    ("card_number", 40, True), ("notes", 2000, False), ("company", 120, True), ("job_title", 60, True),
    ("company_industry", 60, True), ("plate_number", 20, True),
)
PROFILE_FIELDS = (
    "name", "address_as", "phone", "phone_alt", "email", "external_ref", "card_number", "classification",
    "location_id", "owner_user_id", "birthday", "gender", "company", "job_title", "company_industry",
    "company_size", "plate_number", "consent_phone", "consent_sms", "consent_email", "tags", "notes",
)


def _clean_customer(s: Session, data: dict, existing: Customer | None, as_of: dt.date | None,
                    region: str | None) -> dict:
    errors: dict[str, list] = {}

    def err(field, message):
        errors.setdefault(field, []).append(message)

    region = region or tenant_country(s)
    if as_of is None:
        tenant = s.get(Tenant, bound_tenant_id(s))
        as_of = clock.today(tenant.timezone if tenant is not None else "UTC")
    # On an edit, a field the caller did not send keeps its value (forms send them all).
    keys = [k for k in PROFILE_FIELDS if existing is None or k in data]
    clean: dict = {}
    for key, limit, plain in _TEXT_FIELDS:
        if key not in keys:
            continue
        clean[key] = _text(data, key)
        if len(clean[key]) > limit:
            err(key, _l("At most %(n)s characters.", n=limit))
        if plain and any(c in clean[key] for c in "<>"):
            err(key, _l("Use plain text: the characters < and > are not allowed."))
    if "name" in clean and not clean["name"]:
        err("name", _l("This field is required."))
    if "email" in clean:
        clean["email"] = clean["email"].lower()
        if clean["email"] and not EMAIL_RE.match(clean["email"]):
            err("email", _l("Enter a valid email address."))
    if "plate_number" in clean:
        clean["plate_number"] = normalise_plate(clean["plate_number"])
    for key in ("phone", "phone_alt"):
        if key in keys:
            try:
                clean[key] = parse_phone(_text(data, key), region)
            except ValueError:
                err(key, PHONE_MESSAGE)
                clean[key] = _text(data, key)
    if "classification" in keys:
        clean["classification"] = _text(data, "classification") or "general"
        if clean["classification"] not in CLASSIFICATIONS:
            err("classification", _l("Choose one of the listed values."))
    for key, choices in (("gender", GENDERS), ("company_size", COMPANY_SIZES)):
        if key in keys:
            clean[key] = _text(data, key)
            if clean[key] and clean[key] not in choices:
                err(key, _l("Choose one of the listed values."))
    for key in ("consent_phone", "consent_sms", "consent_email"):
        if key in keys:
            clean[key] = _flag(data, key)
    if "birthday" in keys:
        try:
            clean["birthday"] = parse_birthday(data.get("birthday"), as_of)
        except ValidationFailed as exc:
            for m in exc.errors["birthday"]:
                err("birthday", m)
    if "tags" in keys:
        try:
            clean["tags"] = parse_tags(data.get("tags"))
        except ValidationFailed as exc:
            for m in exc.errors["tags"]:
                err("tags", m)
    if "location_id" in keys:
        try:
            location = _entry(s, Location, data.get("location_id"), existing.location_id if existing else None)
        except LookupError:
            err("location_id", _l("Choose one of the listed values."))
            location = None
        clean["location_id"] = location.id if location else None
    if "owner_user_id" in keys:
        try:
            clean["owner_user_id"] = _member(s, data.get("owner_user_id"),
                                             existing.owner_user_id if existing else None)
        except LookupError:
            err("owner_user_id", _l("Choose one of the listed values."))
    for key in ("external_ref", "card_number"):
        if key in clean:
            clean[key] = clean[key] or None
    duplicates = find_duplicates(s, {k: v for k, v in clean.items() if k not in errors}, existing, region)
    for key, other in duplicates.items():
        err(key, DUPLICATE_MESSAGES[key](other.name))
    if duplicates:
        raise DuplicateCustomer(errors, duplicates)
    if errors:
        raise ValidationFailed(errors)
    return clean


def find_duplicates(s: Session, data: dict, existing: Customer | None = None,
                    region: str | None = None) -> dict[str, Customer]:
    """The other customers of the bound tenant that already have the phone numbers,
    email, external reference or card number in ``data`` (by field; empty and invalid
    values are skipped). A phone number matches either number of another customer, also
    one saved before phones were normalised (13800138000 for +8613800138000)."""
    region = region or tenant_country(s)
    duplicates: dict[str, Customer] = {}

    def first(condition):
        q = select(Customer).where(condition, Customer.merged_into_id.is_(None))
        if existing is not None:
            q = q.where(Customer.id != existing.id)
        return s.scalars(q.order_by(Customer.name, Customer.id).limit(1)).first()

    for key in ("phone", "phone_alt"):
        try:
            e164 = parse_phone(_text(data, key), region)
        except ValueError:
            continue
        variants = phone_variants(e164)
        if variants:
            other = first(or_(Customer.phone.in_(variants), Customer.phone_alt.in_(variants)))
            if other is not None:
                duplicates[key] = other
    values = {
        "email": _text(data, "email").lower(),
        "external_ref": _text(data, "external_ref"),
        "card_number": _text(data, "card_number"),
    }
    columns = {"email": func.lower(Customer.email),
               "external_ref": Customer.external_ref, "card_number": Customer.card_number}
    for key, value in values.items():
        if value:
            other = first(columns[key] == value)
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


def create_customer(s: Session, data: dict, as_of: dt.date | None = None, region: str | None = None) -> Customer:
    """Create a customer of the bound tenant from form or API values (PROFILE_FIELDS;
    phones are stored in E.164 read with ``region``, default the tenant's country; the
    birthday may not be after ``as_of``, default the tenant's today).

    Raises ValidationFailed with per-field messages for bad values, and DuplicateCustomer
    when a phone number, the email, external reference or card number already belongs to
    another customer. Nothing is written when it raises.
    """
    clean = _clean_customer(s, data, None, as_of, region)
    customer = Customer(**clean)
    _save(s, customer)
    return customer


def update_customer(s: Session, customer: Customer, data: dict, as_of: dt.date | None = None,
                    region: str | None = None) -> Customer:
    """Change a customer; the same checks and errors as ``create_customer``. Fields not
    in ``data`` keep their values. Refused (``refuse_if_erased``) for an erased customer."""
    refuse_if_erased(customer)
    clean = _clean_customer(s, data, customer, as_of, region)
    for key, value in clean.items():
        setattr(customer, key, value)
    _save(s, customer)
    return customer


# --- decision makers, preferences, contact log --------------------------------------------

def _plain(errors: dict, data: dict, key: str, limit: int, required: bool = False) -> str:
    value = _text(data, key)
    if required and not value:
        errors.setdefault(key, []).append(_l("This field is required."))
    if len(value) > limit:
        errors.setdefault(key, []).append(_l("At most %(n)s characters.", n=limit))
    if any(c in value for c in "<>"):
        errors.setdefault(key, []).append(_l("Use plain text: the characters < and > are not allowed."))
    return value


def _check_choice(errors: dict, data: dict, key: str, choices: dict) -> str:
    value = _text(data, key)
    if not value:
        errors.setdefault(key, []).append(_l("This field is required."))
    elif value not in choices:
        errors.setdefault(key, []).append(_l("Choose one of the listed values."))
    return value


def _optional_location(s: Session, errors: dict, data: dict, current: uuid.UUID | None = None) -> uuid.UUID | None:
    try:
        location = _entry(s, Location, data.get("location_id"), current)
    except LookupError:
        errors.setdefault("location_id", []).append(_l("Choose one of the listed values."))
        return None
    return location.id if location else None


def list_decision_makers(s: Session, customer: Customer) -> list[CustomerContact]:
    return list(s.scalars(select(CustomerContact).where(CustomerContact.customer_id == customer.id)
                          .order_by(CustomerContact.name, CustomerContact.id)))


def _clean_decision_maker(s: Session, data: dict, region: str | None) -> dict:
    """The fields of a decision maker (name required, role, phone in E.164), for adding
    and editing alike. Raises ValidationFailed per field."""
    errors: dict[str, list] = {}
    name = _plain(errors, data, "name", 120, required=True)
    role = _plain(errors, data, "role", 60)
    phone = ""
    try:
        phone = parse_phone(_text(data, "phone"), region or tenant_country(s))
    except ValueError:
        errors.setdefault("phone", []).append(PHONE_MESSAGE)
    if errors:
        raise ValidationFailed(errors)
    return {"name": name, "role": role, "phone": phone}


def add_decision_maker(s: Session, customer: Customer, data: dict, region: str | None = None) -> CustomerContact:
    """Add a key decision maker (name required, role, phone in E.164) to a company
    customer. Raises ValidationFailed per field, or for an erased customer
    (``refuse_if_erased``); nothing is written then."""
    refuse_if_erased(customer)
    refuse_if_merged(customer)
    contact = CustomerContact(customer_id=customer.id, **_clean_decision_maker(s, data, region))
    s.add(contact)
    s.flush()
    return contact


def get_decision_maker(s: Session, customer: Customer, contact_id: uuid.UUID) -> CustomerContact:
    """One of the customer's decision makers; NotFound for any other id."""
    return _own_entry(s, CustomerContact, customer, contact_id)


def update_decision_maker(s: Session, customer: Customer, contact_id: uuid.UUID, data: dict,
                          region: str | None = None) -> CustomerContact:
    """Change a decision maker's name, role and phone, checked as when adding. Raises
    NotFound for an id not of the customer's decision makers, ValidationFailed per field
    (nothing is changed then), and for an erased customer (``refuse_if_erased``)."""
    refuse_if_erased(customer)
    contact = get_decision_maker(s, customer, contact_id)
    for key, value in _clean_decision_maker(s, data, region).items():
        setattr(contact, key, value)
    s.flush()
    return contact


def _own_entry(s: Session, model, customer: Customer, entry_id: uuid.UUID):
    """The row of ``model`` with this id if it belongs to the customer; NotFound for any
    other id (another customer's, another tenant's, or none)."""
    entry = s.get(model, (bound_tenant_id(s), entry_id))
    if entry is None or entry.customer_id != customer.id:
        raise NotFound(model.__tablename__)
    return entry


def _remove_entry(s: Session, model, customer: Customer, entry_id: uuid.UUID) -> None:
    """Delete one row of ``model`` that belongs to the customer; NotFound for any other id
    (another customer's, another tenant's, or none)."""
    s.delete(_own_entry(s, model, customer, entry_id))
    s.flush()


def _locations_by_id(s: Session, ids) -> dict[uuid.UUID, Location]:
    """The bound tenant's locations with these ids, in one query."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    return {loc.id: loc for loc in s.scalars(select(Location).where(Location.id.in_(ids)))}


def remove_decision_maker(s: Session, customer: Customer, contact_id: uuid.UUID) -> None:
    """Remove one of the customer's decision makers; NotFound for any other id."""
    _remove_entry(s, CustomerContact, customer, contact_id)


@dataclass(frozen=True)
class PreferenceRow:
    preference: Preference
    recorded_by: str
    location: Location | None


def list_preferences(s: Session, customer: Customer, limit: int | None = None) -> tuple[list[PreferenceRow], int]:
    """The customer's preferences, latest first (at most ``limit``), with who recorded
    each and where; and how many there are in all."""
    base = select(Preference).where(Preference.customer_id == customer.id)
    count = s.scalar(select(func.count()).select_from(base.subquery()))
    q = base.order_by(Preference.recorded_at.desc(), Preference.id.desc())
    if limit is not None:
        q = q.limit(limit)
    prefs = list(s.scalars(q))
    names = user_names(s, (p.recorded_by_id for p in prefs))
    locations = _locations_by_id(s, (p.location_id for p in prefs))
    rows = [PreferenceRow(p, names.get(p.recorded_by_id, ""), locations.get(p.location_id)) for p in prefs]
    return rows, count


def add_preference(s: Session, customer: Customer, data: dict, recorded_by_id: uuid.UUID | None,
                   recorded_at: dt.datetime) -> Preference:
    """Record a preference: category (PREFERENCE_CATEGORIES), key and value (plain text),
    optional location where it was recorded. Visible at every location of the tenant.
    Raises ValidationFailed per field, or for an erased customer (``refuse_if_erased``);
    nothing is written then."""
    refuse_if_erased(customer)
    refuse_if_merged(customer)
    errors: dict[str, list] = {}
    category = _check_choice(errors, data, "category", PREFERENCE_CATEGORIES)
    key = _plain(errors, data, "key", 60, required=True)
    value = _plain(errors, data, "value", 255, required=True)
    location_id = _optional_location(s, errors, data)
    if errors:
        raise ValidationFailed(errors)
    pref = Preference(customer_id=customer.id, category=category, key=key, value=value,
                      recorded_by_id=recorded_by_id, location_id=location_id, recorded_at=recorded_at)
    s.add(pref)
    s.flush()
    return pref


def remove_preference(s: Session, customer: Customer, preference_id: uuid.UUID) -> None:
    """Remove one of the customer's preferences; NotFound for any other id."""
    _remove_entry(s, Preference, customer, preference_id)


@dataclass(frozen=True)
class ContactLogRow:
    entry: ContactLog
    staff: str
    location: Location | None


def contact_history(s: Session, customer: Customer, limit: int = 100) -> list[ContactLogRow]:
    """The customer's contact log, latest first, with the staff member and location."""
    entries = list(s.scalars(select(ContactLog).where(ContactLog.customer_id == customer.id)
                             .order_by(ContactLog.occurred_at.desc(), ContactLog.id.desc()).limit(limit)))
    names = user_names(s, (e.staff_user_id for e in entries))
    locations = _locations_by_id(s, (e.location_id for e in entries))
    return [ContactLogRow(e, names.get(e.staff_user_id, ""), locations.get(e.location_id)) for e in entries]


def parse_local_datetime(raw, tz_name: str) -> dt.datetime:
    """An aware UTC instant from a datetime-local value (2026-03-31T14:30) read in the
    tenant's time zone, or from an aware datetime. Raises ValueError."""
    from zoneinfo import ZoneInfo

    if isinstance(raw, dt.datetime):
        value = raw
    else:
        text = str(raw).strip().replace(" ", "T")
        value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz_name))
    return value.astimezone(dt.timezone.utc)


def _clean_contact_log(s: Session, data: dict, now: dt.datetime, tz_name: str, default_time: dt.datetime | None,
                       current_location: uuid.UUID | None = None) -> dict:
    """The fields of a contact log entry, for logging and editing alike: channel
    (CONTACT_CHANNELS), occurred_at (a datetime-local value in the tenant's zone
    ``tz_name``, not after ``now``; empty means ``default_time``, and is refused when that
    is None), outcome, next step, optional location (``current_location`` is allowed even
    when since deactivated). Raises ValidationFailed per field."""
    errors: dict[str, list] = {}
    channel = _check_choice(errors, data, "channel", CONTACT_CHANNELS)
    outcome = _plain(errors, data, "outcome", 500)
    next_step = _plain(errors, data, "next_step", 255)
    location_id = _optional_location(s, errors, data, current_location)
    raw = data.get("occurred_at")
    occurred_at = default_time
    if raw in (None, ""):
        if default_time is None:
            errors["occurred_at"] = [_l("This field is required.")]
    else:
        try:
            occurred_at = parse_local_datetime(raw, tz_name)
        except ValueError:
            errors["occurred_at"] = [_l("Enter a date and time such as 2026-03-31 14:30.")]
        else:
            # A minute's grace: the form's default is the current minute.
            if occurred_at > now + dt.timedelta(minutes=1):
                errors["occurred_at"] = [_l("The time cannot be in the future.")]
            elif occurred_at.year < 1900:
                errors["occurred_at"] = [_l("Enter a date and time such as 2026-03-31 14:30.")]
    if errors:
        raise ValidationFailed(errors)
    return {"channel": channel, "occurred_at": occurred_at, "outcome": outcome, "next_step": next_step,
            "location_id": location_id}


def log_contact(s: Session, customer: Customer, data: dict, staff_user_id: uuid.UUID | None,
                now: dt.datetime, tz_name: str) -> ContactLog:
    """Log a call, visit, message or email: channel, occurred_at (a datetime-local value in
    the tenant's zone ``tz_name``; empty means ``now``; not after ``now``), outcome, next
    step, optional location. Raises ValidationFailed per field, or for an erased customer
    (``refuse_if_erased``); nothing is written then."""
    refuse_if_erased(customer)
    refuse_if_merged(customer)
    entry = ContactLog(customer_id=customer.id, staff_user_id=staff_user_id,
                       **_clean_contact_log(s, data, now, tz_name, default_time=now))
    s.add(entry)
    s.flush()
    return entry


def get_contact_log(s: Session, customer: Customer, entry_id: uuid.UUID) -> ContactLog:
    """One entry of the customer's contact log; NotFound for any other id."""
    return _own_entry(s, ContactLog, customer, entry_id)


def may_edit_contact_log(entry: ContactLog, user_id: uuid.UUID | None, any_entry: bool) -> bool:
    """Whether a user may edit the entry: the staff member who logged it may, and anyone
    who may edit any entry (``any_entry``: managers and owners)."""
    return any_entry or (user_id is not None and entry.staff_user_id == user_id)


def _contact_log_values(s: Session, entry: ContactLog) -> dict:
    """The entry's fields as an audit entry records them (the location by its code)."""
    location = _locations_by_id(s, [entry.location_id]).get(entry.location_id)
    return {"channel": entry.channel, "occurred_at": entry.occurred_at.astimezone(dt.timezone.utc).isoformat(),
            "outcome": entry.outcome, "next_step": entry.next_step, "location": location.code if location else ""}


def update_contact_log(s: Session, customer: Customer, entry_id: uuid.UUID, data: dict,
                       actor_user_id: uuid.UUID | None, now: dt.datetime, tz_name: str) -> dict[str, list]:
    """Change an entry of the customer's contact log, checked as when logging (but the time
    is required). The staff member who logged it stays. Writes an AuditEntry
    (CONTACT_LOG_EDIT, on the customer) with {field: [old, new]} when anything changed, and
    returns those changes. Raises NotFound for an id not of the customer's log,
    ValidationFailed per field (nothing is changed then). Who may edit is the caller's
    check (``may_edit_contact_log``). Refused for an erased customer (``refuse_if_erased``):
    the entry's outcome and next step were emptied by the erasure and stay so."""
    refuse_if_erased(customer)
    entry = get_contact_log(s, customer, entry_id)
    clean = _clean_contact_log(s, data, now, tz_name, default_time=None, current_location=entry.location_id)
    # The form shows the time to the minute: an unchanged minute keeps the stored seconds.
    if clean["occurred_at"] == entry.occurred_at.replace(second=0, microsecond=0):
        clean["occurred_at"] = entry.occurred_at
    before = _contact_log_values(s, entry)
    for key, value in clean.items():
        setattr(entry, key, value)
    after = _contact_log_values(s, entry)
    changes = {key: [before[key], after[key]] for key in before if before[key] != after[key]}
    if changes:
        write_audit(s, actor_user_id, CONTACT_LOG_EDIT, "customer", customer.id,
                    {"contact_log_id": str(entry.id), "changes": changes}, when=now)
    s.flush()
    return changes


# --- the guest card ---------------------------------------------------------------------------

def _anniversary(birthday: dt.date, year: int) -> dt.date:
    try:
        return birthday.replace(year=year)
    except ValueError:  # 29 February in a common year: celebrated on the 28th
        return dt.date(year, 2, 28)


def birthday_this_week(birthday: dt.date | None, as_of: dt.date) -> bool:
    """Whether the birthday falls in the calendar week (Monday to Sunday) of ``as_of``;
    a 29 February birthday counts on 28 February in common years."""
    if birthday is None:
        return False
    monday = as_of - dt.timedelta(days=as_of.weekday())
    sunday = monday + dt.timedelta(days=6)
    return any(monday <= _anniversary(birthday, year) <= sunday for year in {monday.year, sunday.year})


@dataclass(frozen=True)
class GuestCard:
    customer: Customer
    important: bool
    birthday_this_week: bool
    preferences: list[PreferenceRow]
    more_preferences: int
    last_visit: TransactionRow | None


def guest_card(s: Session, customer: Customer, as_of: dt.date) -> GuestCard:
    """What the front desk needs to greet a customer, as of the tenant's day ``as_of``."""
    prefs, count = list_preferences(s, customer, CARD_PREFERENCES)
    return GuestCard(customer=customer, important=customer.classification == "important",
                     birthday_this_week=birthday_this_week(customer.birthday, as_of),
                     preferences=prefs, more_preferences=max(0, count - len(prefs)),
                     last_visit=last_visit(s, customer))


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
    if amount.adjusted() > AMOUNT_MAX_DIGITS - 3:  # more than the 12 digits with 2 decimals (1e30 would not quantize)
        raise ValidationFailed.one("amount", _l("Use at most %(n)s digits.", n=AMOUNT_MAX_DIGITS))
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
    return s.scalars(_DEFAULT_KIND).first()


# Built once: every transaction pushed through the API without a kind asks.
_DEFAULT_KIND = (select(TransactionKind).where(TransactionKind.active.is_(True))
                 .order_by(TransactionKind.is_default.desc(), TransactionKind.position))


def record_transaction(s: Session, customer: Customer, data: dict, staff_user_id: uuid.UUID | None,
                       as_of: dt.date) -> Transaction:
    """Record a transaction of ``customer``: kind (required, active), occurred_on (a date
    not after ``as_of``), amount, quantity, optional location and department (active) and
    note. Raises ValidationFailed with a message per field; nothing is written then."""
    return add_transaction(s, new_transaction(s, customer, data, staff_user_id, as_of))


def add_transaction(s: Session, tx: Transaction) -> Transaction:
    """Write a transaction made by ``new_transaction`` (at once, one INSERT)."""
    insert_now(s, tx)
    return tx


def new_transaction(s: Session, customer: Customer, data: dict, staff_user_id: uuid.UUID | None,
                    as_of: dt.date) -> Transaction:
    """The checks of ``record_transaction`` and the transaction they allow, not yet added
    to the session: a request may check (read) before it takes SQLite's write lock and
    write after (saas/api/customers.py)."""
    refuse_if_merged(customer)
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
    elif note and customer.erased_at is not None:
        # Erasure cleared the notes of this customer's transactions; a new one would bring
        # personal data back (the transaction itself is kept for the books).
        errors["note"] = [_l("This customer's personal data was erased: leave the note empty.")]
    if errors:
        raise ValidationFailed(errors)
    tx = Transaction(customer_id=customer.id, kind_id=kind.id, occurred_on=occurred_on, amount=amount,
                     quantity=quantity, location_id=location.id if location else None,
                     department_id=department.id if department else None,
                     staff_user_id=staff_user_id, note=note)
    return tx
