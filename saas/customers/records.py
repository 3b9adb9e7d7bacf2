"""Keeping the customer archive clean and lawful: merging duplicate customers, handing a
departed staff member's customers to someone else, the privacy requests (export one
customer's data, erase it), and the record of list exports. Plain functions over a
tenant-bound session; each change writes an AuditEntry in the same transaction, so the
change and its record commit or roll back together."""
from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from saas.auth.models import Membership, User
from saas.customers.models import AuditEntry, ContactLog, Customer, CustomerContact, Preference, Transaction
from saas.db import bound_tenant_id
from saas.errors import NotFound, ValidationFailed
from saas.settings.models import Department, Location, TransactionKind

# Profile fields a merge copies from the duplicate when the survivor's is empty. Consent
# flags are not among them: consent given (or withdrawn) on one record is not silently
# carried to another.
MERGE_FILL_FIELDS = (
    "address_as", "phone", "phone_alt", "email", "plate_number", "birthday", "gender", "company",
    "job_title", "company_industry", "company_size", "notes", "location_id", "owner_user_id",
)
# Unique per tenant: moved (not copied) to the survivor when it has none.
MERGE_KEY_FIELDS = ("external_ref", "card_number")

# Personal fields an erasure clears, with the value they get.
ERASED_VALUES = {
    "address_as": "", "phone": "", "phone_alt": "", "email": "", "birthday": None, "gender": "",
    "company": "", "job_title": "", "company_industry": "", "company_size": "", "plate_number": "",
    "notes": "", "tags": [], "consent_phone": False, "consent_sms": False, "consent_email": False,
    "external_ref": None, "card_number": None,
}

# The audit action of an edited contact log entry (on the customer; details hold the
# entry's id and {field: [old, new]}), and its fields that are free text.
CONTACT_LOG_EDIT = "contact_log_edit"
CONTACT_LOG_FREE_TEXT = ("outcome", "next_step")

CANDIDATE_LIMIT = 20
OWNED_LIST_LIMIT = 200

# Other domains move their own rows of a duplicate customer to the survivor by appending a
# hook here at import time: ``hook(s, survivor, duplicate, actor_user_id) -> dict[str, int]
# | None`` (the actor: who merges, for the rows the hook writes). The counts it returns
# ("points_entries": 3, ...) are recorded in the merge's audit entry.
# The loyalty ledger (issue: loyalty) is the first expected user.
MergeHook = Callable[[Session, Customer, Customer, "uuid.UUID | None"], "dict[str, int] | None"]
MERGE_HOOKS: list[MergeHook] = []


def active_customers_filter():
    """The condition a customer list or search applies so that merged duplicates and
    erased customers no longer appear: ``select(Customer).where(active_customers_filter())``."""
    return and_(Customer.merged_into_id.is_(None), Customer.erased_at.is_(None))


def get_customer(s: Session, customer_id: uuid.UUID) -> Customer:
    """The bound tenant's customer with this id (merged and erased ones too); raises
    NotFound otherwise, also for another tenant's customer."""
    customer = s.get(Customer, (bound_tenant_id(s), customer_id))
    if customer is None:
        raise NotFound("customer")
    return customer


def write_audit(s: Session, actor_user_id: uuid.UUID | None, action: str, object_type: str,
                object_id: uuid.UUID | None, details: dict, when: dt.datetime | None = None) -> AuditEntry:
    """Add an AuditEntry to the session (it commits or rolls back with the change it records)."""
    entry = AuditEntry(actor_user_id=actor_user_id, action=action, object_type=object_type,
                       object_id=object_id, details=details)
    if when is not None:
        entry.created_at = when
    s.add(entry)
    return entry


def _is_empty(value) -> bool:
    return value is None or value == "" or value == []


# --- merge -------------------------------------------------------------------------------

@dataclass
class Candidate:
    customer: Customer
    # Which of this customer's details the other one shares: phone, email, external_ref, card_number.
    shared: list[str] = field(default_factory=list)


def merge_candidates(s: Session, customer: Customer, query: str = "") -> list[Candidate]:
    """Customers that may be duplicates of ``customer``: those sharing a phone number,
    email, external reference or card number, then (when ``query`` is given) those whose
    name starts with it or whose phone, card number or reference matches it. Merged and
    erased customers and ``customer`` itself are left out."""
    base = select(Customer).where(active_customers_filter(), Customer.id != customer.id)
    found: dict[uuid.UUID, Candidate] = {}

    phones = {p for p in (customer.phone, customer.phone_alt) if p}
    checks = []
    if phones:
        checks.append(("phone", or_(Customer.phone.in_(phones), Customer.phone_alt.in_(phones))))
    if customer.email:
        checks.append(("email", func.lower(Customer.email) == customer.email.lower()))
    keys = {k for k in (customer.external_ref, customer.card_number) if k}
    if keys:
        checks.append(("external_ref", Customer.external_ref.in_(keys)))
        checks.append(("card_number", Customer.card_number.in_(keys)))
    for name, condition in checks:
        for other in s.scalars(base.where(condition).order_by(Customer.name, Customer.id).limit(CANDIDATE_LIMIT)):
            found.setdefault(other.id, Candidate(other)).shared.append(name)

    query = (query or "").replace("\x00", "").strip()[:100]
    if query:
        conditions = [
            func.lower(Customer.name).startswith(query.lower(), autoescape=True),
            Customer.card_number == query,
            Customer.external_ref == query,
            func.lower(Customer.email) == query.lower(),
        ]
        digits = re.sub(r"[\s\-().]", "", query)
        if re.fullmatch(r"\+?[0-9]+", digits):
            conditions.append(Customer.phone.contains(digits, autoescape=True))
        for other in s.scalars(base.where(or_(*conditions)).order_by(Customer.name, Customer.id)
                               .limit(CANDIDATE_LIMIT)):
            found.setdefault(other.id, Candidate(other))
    return list(found.values())


def check_mergeable(s: Session, survivor_id: uuid.UUID, duplicate_id: uuid.UUID) -> tuple[Customer, Customer]:
    """Load both customers and check that ``duplicate_id`` may be merged into
    ``survivor_id``. Raises NotFound for an id the tenant does not have, ValidationFailed
    (field "duplicate_id") for the same customer twice, or a merged or erased customer."""
    survivor = get_customer(s, survivor_id)
    duplicate = get_customer(s, duplicate_id)
    if survivor.id == duplicate.id:
        raise ValidationFailed.one("duplicate_id", _l("A customer cannot be merged into itself."))
    if survivor.merged_into_id is not None or duplicate.merged_into_id is not None:
        raise ValidationFailed.one("duplicate_id", _l("This customer was already merged into another one."))
    if survivor.erased_at is not None or duplicate.erased_at is not None:
        raise ValidationFailed.one("duplicate_id", _l("An erased customer cannot be merged."))
    return survivor, duplicate


@dataclass(frozen=True)
class MergePreview:
    survivor: Customer
    duplicate: Customer
    # Rows of the duplicate that will move: transactions, preferences, contact_logs, decision_makers.
    moving: dict[str, int]
    # Profile fields of the survivor that will be filled from the duplicate.
    filling: list[str]


def merge_preview(s: Session, survivor_id: uuid.UUID, duplicate_id: uuid.UUID) -> MergePreview:
    """What ``merge_customers`` would do, without doing it; the same errors."""
    survivor, duplicate = check_mergeable(s, survivor_id, duplicate_id)

    def count(model):
        return s.scalar(select(func.count()).select_from(model).where(model.customer_id == duplicate.id)) or 0

    moving = {"transactions": count(Transaction), "preferences": count(Preference),
              "contact_logs": count(ContactLog), "decision_makers": count(CustomerContact)}
    filling = [n for n in MERGE_FILL_FIELDS + MERGE_KEY_FIELDS
               if _is_empty(getattr(survivor, n)) and not _is_empty(getattr(duplicate, n))]
    return MergePreview(survivor, duplicate, moving, filling)


def _move(s: Session, model, survivor: Customer, duplicate: Customer) -> int:
    result = s.execute(update(model).where(model.customer_id == duplicate.id).values(customer_id=survivor.id)
                       .execution_options(synchronize_session="fetch"))
    return result.rowcount or 0


def merge_customers(s: Session, survivor_id: uuid.UUID, duplicate_id: uuid.UUID,
                    actor_user_id: uuid.UUID | None) -> Customer:
    """Merge the duplicate customer into the survivor and return the survivor.

    Moves the duplicate's transactions, preferences, contact log and decision makers (and,
    through MERGE_HOOKS, other domains' rows) to the survivor; fills the survivor's empty
    profile fields from the duplicate, never overwriting a filled one; moves the external
    reference and card number when the survivor has none; marks the duplicate as merged
    into the survivor and keeps everything else of it. Customers merged earlier into the
    duplicate now point at the survivor. Writes an AuditEntry ("merge") on the survivor
    and one ("merged_into") on the duplicate.

    Raises NotFound when either id is not a customer of the bound tenant, ValidationFailed
    for a customer merged into itself, or a merged or erased customer.
    """
    if s.connection().dialect.name == "postgresql":
        # Both rows locked (in id order) and read afresh before the checks: a merge of either
        # committed meanwhile is seen (SQLite's write transaction is exclusive already).
        s.execute(select(Customer.id).where(Customer.id.in_([survivor_id, duplicate_id]))
                  .order_by(Customer.id).with_for_update(key_share=True))
        s.execute(select(Customer).where(Customer.id.in_([survivor_id, duplicate_id]))
                  .execution_options(populate_existing=True)).all()
    survivor, duplicate = check_mergeable(s, survivor_id, duplicate_id)
    moved = {
        "transactions": _move(s, Transaction, survivor, duplicate),
        "preferences": _move(s, Preference, survivor, duplicate),
        "contact_logs": _move(s, ContactLog, survivor, duplicate),
        "decision_makers": _move(s, CustomerContact, survivor, duplicate),
    }
    filled = []
    for name in MERGE_FILL_FIELDS:
        if _is_empty(getattr(survivor, name)) and not _is_empty(getattr(duplicate, name)):
            setattr(survivor, name, getattr(duplicate, name))
            filled.append(name)
    # The duplicate's phone is kept findable as the survivor's second number.
    if (not survivor.phone_alt and duplicate.phone and duplicate.phone != survivor.phone
            and "phone" not in filled):
        survivor.phone_alt = duplicate.phone
        filled.append("phone_alt")
    new_tags = [t for t in (duplicate.tags or []) if t not in (survivor.tags or [])]
    if new_tags:
        survivor.tags = list(survivor.tags or []) + new_tags
        filled.append("tags")
    keys = {}
    for name in MERGE_KEY_FIELDS:
        if getattr(survivor, name) is None and getattr(duplicate, name) is not None:
            keys[name] = getattr(duplicate, name)
            setattr(duplicate, name, None)
    if keys:
        s.flush()  # free the unique values before the survivor takes them
        for name, value in keys.items():
            setattr(survivor, name, value)
    duplicate.merged_into_id = survivor.id
    s.flush()
    redirected = s.execute(update(Customer).where(Customer.merged_into_id == duplicate.id)
                           .values(merged_into_id=survivor.id)
                           .execution_options(synchronize_session="fetch")).rowcount or 0
    if redirected:
        moved["merged_records"] = redirected
    for hook in MERGE_HOOKS:
        counts = hook(s, survivor, duplicate, actor_user_id)
        if counts:
            moved.update(counts)
    write_audit(s, actor_user_id, "merge", "customer", survivor.id,
           {"duplicate_id": str(duplicate.id), "moved": moved, "filled": filled, "keys_moved": sorted(keys)})
    write_audit(s, actor_user_id, "merged_into", "customer", duplicate.id, {"survivor_id": str(survivor.id)})
    s.flush()
    return survivor


# --- reassign a staff member's customers ------------------------------------------------

def _owned(user_id: uuid.UUID):
    return select(Customer).where(Customer.owner_user_id == user_id, active_customers_filter())


def owned_customer_count(s: Session, user_id: uuid.UUID) -> int:
    """How many (not merged, not erased) customers the user owns in the bound tenant."""
    return s.scalar(select(func.count()).select_from(_owned(user_id).subquery())) or 0


def owned_customer_counts(s: Session) -> dict[uuid.UUID, int]:
    """Customers owned per staff member (user id -> count) in the bound tenant."""
    q = (select(Customer.owner_user_id, func.count()).where(Customer.owner_user_id.is_not(None),
                                                           active_customers_filter())
         .group_by(Customer.owner_user_id))
    return {uid: n for uid, n in s.execute(q)}


def owned_customers(s: Session, user_id: uuid.UUID, limit: int = OWNED_LIST_LIMIT) -> list[Customer]:
    """The user's customers by name (at most ``limit``)."""
    return list(s.scalars(_owned(user_id).order_by(Customer.name, Customer.id).limit(limit)))


def reassign_targets(s: Session, from_user_id: uuid.UUID) -> list[tuple[Membership, User]]:
    """The active members of the bound tenant who may take over the customers."""
    q = (select(Membership, User).join(User, User.id == Membership.user_id)
         .where(Membership.active.is_(True), Membership.user_id != from_user_id).order_by(User.name))
    return [tuple(r) for r in s.execute(q)]


def reassign_customers(s: Session, from_user_id: uuid.UUID, to_user_id: uuid.UUID | None,
                       actor_user_id: uuid.UUID | None) -> int:
    """Give every (not merged, not erased) customer owned by ``from_user_id`` to
    ``to_user_id``; returns how many. Writes an AuditEntry ("reassign") per customer and one
    on the former owner.

    Raises NotFound when ``from_user_id`` is not a member of the bound tenant, and
    ValidationFailed (field "to_user_id") when the target is not another active member.
    """
    tenant_id = bound_tenant_id(s)
    if s.scalar(select(Membership.id).where(Membership.user_id == from_user_id)) is None:
        raise NotFound("membership")
    target = None
    if to_user_id is not None and to_user_id != from_user_id:
        target = s.scalar(select(Membership).where(Membership.user_id == to_user_id,
                                                   Membership.active.is_(True)))
    if target is None or target.tenant_id != tenant_id:
        raise ValidationFailed.one("to_user_id", _l("Choose another active member of your business."))
    ids = list(s.scalars(select(Customer.id).where(Customer.owner_user_id == from_user_id,
                                                   active_customers_filter())))
    if not ids:
        return 0
    s.execute(update(Customer).where(Customer.id.in_(ids)).values(owner_user_id=to_user_id)
              .execution_options(synchronize_session="fetch"))
    details = {"from_user_id": str(from_user_id), "to_user_id": str(to_user_id)}
    s.add_all([AuditEntry(actor_user_id=actor_user_id, action="reassign", object_type="customer",
                          object_id=cid, details=details) for cid in ids])
    write_audit(s, actor_user_id, "reassign", "user", from_user_id, {**details, "customers": len(ids)})
    s.flush()
    return len(ids)


# --- privacy: export and erase -----------------------------------------------------------

def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _code(entry) -> str | None:
    return entry.code if entry is not None else None


def export_customer(s: Session, customer_id: uuid.UUID, actor_user_id: uuid.UUID | None,
                    now: dt.datetime) -> dict:
    """Everything the tenant holds about one customer, as JSON-ready data: profile,
    decision makers, preferences, contact log and transactions (amounts as strings).
    Writes an AuditEntry ("export"). Raises NotFound for an id the tenant does not have."""
    customer = get_customer(s, customer_id)
    # The audit entry goes first: on SQLite a write that starts the transaction waits for
    # the lock instead of failing after the reads.
    write_audit(s, actor_user_id, "export", "customer", customer.id, {}, when=now)
    s.flush()
    locations = {x.id: x for x in s.scalars(select(Location))}
    departments = {x.id: x for x in s.scalars(select(Department))}
    kinds = {x.id: x for x in s.scalars(select(TransactionKind))}
    user_ids = set()

    def user(uid):
        if uid is not None:
            user_ids.add(uid)
        return str(uid) if uid is not None else None

    profile = {
        "id": str(customer.id),
        "name": customer.name,
        "address_as": customer.address_as,
        "phone": customer.phone,
        "phone_alt": customer.phone_alt,
        "email": customer.email,
        "birthday": _iso(customer.birthday),
        "gender": customer.gender,
        "company": customer.company,
        "job_title": customer.job_title,
        "company_industry": customer.company_industry,
        "company_size": customer.company_size,
        "external_ref": customer.external_ref,
        "card_number": customer.card_number,
        "plate_number": customer.plate_number,
        "classification": customer.classification,
        "tags": list(customer.tags or []),
        "notes": customer.notes,
        "consent": {"phone": customer.consent_phone, "sms": customer.consent_sms, "email": customer.consent_email},
        "location": _code(locations.get(customer.location_id)),
        "owner_user_id": user(customer.owner_user_id),
        "merged_into_id": str(customer.merged_into_id) if customer.merged_into_id else None,
        "erased_at": _iso(customer.erased_at),
        "created_at": _iso(customer.created_at),
    }
    decision_makers = [{"name": c.name, "role": c.role, "phone": c.phone}
                       for c in s.scalars(select(CustomerContact).where(CustomerContact.customer_id == customer.id)
                                          .order_by(CustomerContact.name, CustomerContact.id))]
    preferences = [{"category": p.category, "key": p.key, "value": p.value,
                    "location": _code(locations.get(p.location_id)), "recorded_by_user_id": user(p.recorded_by_id),
                    "recorded_at": _iso(p.recorded_at)}
                   for p in s.scalars(select(Preference).where(Preference.customer_id == customer.id)
                                      .order_by(Preference.recorded_at, Preference.id))]
    contact_log = [{"channel": c.channel, "occurred_at": _iso(c.occurred_at), "outcome": c.outcome,
                    "next_step": c.next_step, "location": _code(locations.get(c.location_id)),
                    "staff_user_id": user(c.staff_user_id)}
                   for c in s.scalars(select(ContactLog).where(ContactLog.customer_id == customer.id)
                                      .order_by(ContactLog.occurred_at, ContactLog.id))]
    transactions = []
    total = Decimal("0.00")
    for t in s.scalars(select(Transaction).where(Transaction.customer_id == customer.id)
                       .order_by(Transaction.occurred_on, Transaction.created_at, Transaction.id)):
        total += Decimal(t.amount)
        transactions.append({
            "occurred_on": _iso(t.occurred_on), "kind": _code(kinds.get(t.kind_id)),
            "amount": str(Decimal(t.amount).quantize(Decimal("0.01"))), "quantity": t.quantity,
            "location": _code(locations.get(t.location_id)), "department": _code(departments.get(t.department_id)),
            "staff_user_id": user(t.staff_user_id), "external_id": t.external_id, "note": t.note,
        })
    staff = {str(u.id): u.name for u in s.scalars(select(User).where(User.id.in_(user_ids)))} if user_ids else {}
    return {
        "format": "huitou.customer-export/1",
        "exported_at": _iso(now),
        "customer": profile,
        "decision_makers": decision_makers,
        "preferences": preferences,
        "contact_log": contact_log,
        "transactions": transactions,
        "transactions_total": str(total.quantize(Decimal("0.01"))),
        "staff": staff,
    }


def erased_name(customer_id: uuid.UUID) -> str:
    """The name an erased customer keeps: both languages, and a short id to tell them apart
    (the random end of the UUIDv7, not its time-ordered start)."""
    return f"已删除客户 / Erased customer #{customer_id.hex[-8:]}"


def _anonymise(s: Session, customer: Customer, as_of: dt.datetime) -> dict[str, int]:
    customer.name = erased_name(customer.id)
    for name, value in ERASED_VALUES.items():
        setattr(customer, name, list(value) if isinstance(value, list) else value)
    customer.erased_at = as_of
    counts = {
        "preferences_deleted": s.execute(delete(Preference).where(Preference.customer_id == customer.id)
                                         .execution_options(synchronize_session="fetch")).rowcount or 0,
        "decision_makers_deleted": s.execute(delete(CustomerContact)
                                             .where(CustomerContact.customer_id == customer.id)
                                             .execution_options(synchronize_session="fetch")).rowcount or 0,
        "contact_logs_cleared": s.execute(update(ContactLog).where(ContactLog.customer_id == customer.id)
                                          .values(outcome="", next_step="")
                                          .execution_options(synchronize_session="fetch")).rowcount or 0,
        # A transaction's note is free text that may name the person; amounts and dates stay.
        "transaction_notes_cleared": s.execute(update(Transaction)
                                               .where(Transaction.customer_id == customer.id, Transaction.note != "")
                                               .values(note="")
                                               .execution_options(synchronize_session="fetch")).rowcount or 0,
        "audit_texts_cleared": _clear_edit_texts(s, customer),
    }
    return counts


def _clear_edit_texts(s: Session, customer: Customer) -> int:
    """Empty the old and new free texts the audit entries of contact log edits hold (they
    are the person's data like the log itself); which fields changed, when and by whom stay.
    Returns how many entries were changed."""
    n = 0
    for entry in s.scalars(select(AuditEntry).where(AuditEntry.object_type == "customer",
                                                    AuditEntry.object_id == customer.id,
                                                    AuditEntry.action == CONTACT_LOG_EDIT)):
        changes = dict((entry.details or {}).get("changes") or {})
        texts = [k for k in CONTACT_LOG_FREE_TEXT if k in changes]
        if texts:
            changes.update({k: ["", ""] for k in texts})
            entry.details = {**entry.details, "changes": changes}
            n += 1
    return n


def erase_customer(s: Session, customer_id: uuid.UUID, actor_user_id: uuid.UUID | None,
                   as_of: dt.datetime) -> Customer:
    """Erase a customer's personal data (PIPL/GDPR) and return the customer.

    Anonymises the profile (name becomes ``erased_name``; phones, email, birthday, gender,
    company, title, plate, notes, tags, keys cleared, consents off), deletes preferences
    and decision makers, empties the contact log's outcome and next step and the
    transactions' notes, and sets ``erased_at = as_of``. Transactions keep their amounts
    and dates so the books stay consistent. Customers merged earlier into this one hold the
    same person's old data and are erased with it. Writes an AuditEntry ("erase") with
    counts only, never the erased data.

    Raises NotFound for an id the tenant does not have, ValidationFailed when the customer
    was already erased.
    """
    customer = get_customer(s, customer_id)
    if customer.erased_at is not None:
        raise ValidationFailed.one("", _l("This customer's personal data was already erased."))
    counts = _anonymise(s, customer, as_of)
    merged = list(s.scalars(select(Customer).where(Customer.merged_into_id == customer.id,
                                                   Customer.erased_at.is_(None))))
    for other in merged:
        for key, n in _anonymise(s, other, as_of).items():
            counts[key] += n
        write_audit(s, actor_user_id, "erase", "customer", other.id, {"with": str(customer.id)}, when=as_of)
    counts["merged_records_erased"] = len(merged)
    counts["transactions_kept"] = s.scalar(select(func.count()).select_from(Transaction)
                                           .where(Transaction.customer_id == customer.id)) or 0
    write_audit(s, actor_user_id, "erase", "customer", customer.id, counts, when=as_of)
    s.flush()
    return customer


# --- exports of the customer and transaction lists -------------------------------------

LIST_EXPORTS = ("customers", "transactions")


def audit_list_export(s: Session, actor_user_id: uuid.UUID | None, what: str, file_format: str, filters: dict,
                      rows: int | None, now: dt.datetime) -> AuditEntry:
    """Record an export of the customer or transaction list (``what`` in LIST_EXPORTS):
    the format (csv, xlsx), the filters as given and the number of rows (None while a
    streamed file is still being sent; see ``set_export_rows``)."""
    if what not in LIST_EXPORTS:
        raise ValueError(what)
    entry = write_audit(s, actor_user_id, "export", f"{what}_list", None,
                        {"format": file_format, "filters": filters, "rows": rows}, when=now)
    s.flush()
    return entry


def set_export_rows(s: Session, entry_id: uuid.UUID, rows: int) -> None:
    """Fill in the row count of a list export once its file was sent in full; NotFound for
    an id of no export entry of the bound tenant."""
    entry = s.get(AuditEntry, (bound_tenant_id(s), entry_id))
    if entry is None or entry.action != "export" or entry.object_id is not None:
        raise NotFound("audit_entry")
    entry.details = {**(entry.details or {}), "rows": rows}
    s.flush()


# --- the audit log -----------------------------------------------------------------------

@dataclass(frozen=True)
class AuditRow:
    entry: AuditEntry
    actor: User | None


def customer_audit_log(s: Session, customer_id: uuid.UUID) -> list[AuditRow]:
    """The audit entries about one customer, newest first, with who acted. Raises NotFound
    for an id the tenant does not have."""
    customer = get_customer(s, customer_id)
    entries = list(s.scalars(select(AuditEntry).where(AuditEntry.object_type == "customer",
                                                      AuditEntry.object_id == customer.id)
                             .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())))
    actor_ids = {e.actor_user_id for e in entries if e.actor_user_id}
    actors = {u.id: u for u in s.scalars(select(User).where(User.id.in_(actor_ids)))} if actor_ids else {}
    return [AuditRow(e, actors.get(e.actor_user_id)) for e in entries]


@dataclass(frozen=True)
class ExportRow:
    entry: AuditEntry
    actor: User | None
    customer: Customer | None  # the one customer of a personal-data export


def export_log(s: Session, limit: int = 100, before: dt.datetime | None = None) -> list[ExportRow]:
    """The bound tenant's exports of personal data, newest first: list exports (customers,
    transactions: format, filters, rows) and one customer's data, with who exported;
    at most ``limit``, older than ``before`` when given (the next page)."""
    q = select(AuditEntry).where(AuditEntry.action == "export")
    if before is not None:
        q = q.where(AuditEntry.created_at < before)
    entries = list(s.scalars(q.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit)))
    actor_ids = {e.actor_user_id for e in entries if e.actor_user_id}
    actors = {u.id: u for u in s.scalars(select(User).where(User.id.in_(actor_ids)))} if actor_ids else {}
    customer_ids = {e.object_id for e in entries if e.object_type == "customer" and e.object_id}
    customers = ({c.id: c for c in s.scalars(select(Customer).where(Customer.id.in_(customer_ids)))}
                 if customer_ids else {})
    return [ExportRow(e, actors.get(e.actor_user_id), customers.get(e.object_id)) for e in entries]


def member_names(s: Session, user_ids) -> dict[uuid.UUID, str]:
    """The names of the given users who are (or were) members of the bound tenant."""
    ids = {i for i in user_ids if i is not None}
    if not ids:
        return {}
    q = (select(User.id, User.name).join(Membership, Membership.user_id == User.id)
         .where(User.id.in_(ids)))
    return {uid: name for uid, name in s.execute(q)}


def user_names(s: Session, ids) -> dict[str, str]:
    """``member_names`` by the id as a string (audit details store strings)."""
    uuids = set()
    for raw in ids:
        try:
            uuids.add(uuid.UUID(str(raw)))
        except ValueError:
            continue
    return {str(k): v for k, v in member_names(s, uuids).items()}
