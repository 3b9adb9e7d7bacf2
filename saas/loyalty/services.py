"""Loyalty for the screens and the API: the tenant's programme, a customer's summary
(balance, tier, progress, expiry), history and statement, the rewards catalogue,
referrals, goodwill budgets, and the daily jobs."""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from saas import clock, jobs
from saas.auth.models import Membership, Role, Tenant, User
from saas.customers.records import MERGE_HOOKS
from saas.customers.models import Customer, Transaction
from saas.customers.services import refuse_if_merged
from saas.db import bound_tenant_id
from saas.errors import NotFound, ValidationFailed
from saas.loyalty import ledger
from saas.loyalty.models import LedgerEntry, LoyaltyAccount, Referral, Reward, TierChange
from saas.loyalty.programme import Programme, ProgrammeError, Tier
from saas.settings.models import CODE_RE, CODE_RULE, Department, Location, ProgrammeSection, TransactionKind

_CACHE: dict[tuple, Programme] = {}


_SECTIONS = ProgrammeSection.__table__
_VERSION = select(_SECTIONS.c.updated_at).where(_SECTIONS.c.tenant_id == bindparam("tenant_id"),
                                                 _SECTIONS.c.section == "loyalty")
_DATA = select(_SECTIONS.c.data).where(_SECTIONS.c.tenant_id == bindparam("tenant_id"),
                                       _SECTIONS.c.section == "loyalty")


def programme_of(s: Session) -> Programme:
    """The bound tenant's programme (parsed once per version of its loyalty section: the
    version is read each time, the data only when it is new to this process). Core
    statements with the tenant named: every award and card asks."""
    tenant_id = bound_tenant_id(s)
    if s.new or s.dirty:
        s.flush()  # as the ORM would before a query: a section saved in this session counts
    conn = s.connection()
    version = conn.execute(_VERSION, {"tenant_id": tenant_id}).scalar()
    if version is None:
        return Programme()
    key = (tenant_id, version)
    prog = _CACHE.get(key)
    if prog is None:
        try:
            prog = Programme.from_data(conn.execute(_DATA, {"tenant_id": tenant_id}).scalar())
        except ProgrammeError:  # saved sections are validated; an old one may not be
            prog = Programme()
        if len(_CACHE) > 1000:
            _CACHE.clear()
        _CACHE[key] = prog
    return prog


# --- a customer's loyalty -----------------------------------------------------------------

@dataclass
class Summary:
    balance: int
    redeemable: int
    pending: int
    owed: int
    tier: Tier | None
    tier_since: dt.date | None
    review_on: dt.date | None
    measure: str
    qualifying: object            # value in the window ending as_of
    window_start: dt.date
    next_tier: Tier | None
    next_needed: object           # more needed in the current window to reach next_tier
    keep_needed: object           # more needed by keep_by to keep the tier (0: already kept)
    keep_by: dt.date | None
    expiring: list                # [(day, points)] within 90 days
    point_value: Decimal
    pending_from: dt.date | None  # the first day pending points become redeemable (None: none pending)

    @property
    def cash_value(self) -> Decimal:
        return (Decimal(max(self.redeemable, 0)) * self.point_value).quantize(Decimal("0.01"))


def _balances(s: Session, acc: LoyaltyAccount | None, pool: list,
              as_of: dt.date) -> tuple[int, int, int, int, dt.date | None]:
    """(balance, redeemable, pending, owed, pending_from) of an account whose lots are
    ``pool``: what is owed comes off what could be redeemed; pending_from is the first
    day a pending lot becomes redeemable."""
    if acc is None:
        return 0, 0, 0, 0, None
    owed = sum(left for _, left in ledger.debts(s, acc.customer_id)) if acc.balance <= 0 else 0
    valid = [lot for lot in pool if lot.remaining > 0 and lot.valid_on(as_of)]
    redeemable = sum(lot.remaining for lot in valid if lot.redeemable_on(as_of))
    waiting = [lot for lot in valid if not lot.redeemable_on(as_of)]
    pending_from = min((lot.entry.available_on or lot.entry.occurred_on for lot in waiting), default=None)
    # The expiry due by as_of applied (the daily job books it): a later day's balance
    # leaves out what will have expired by then.
    balance = acc.balance - sum(lot.remaining for lot in pool if lot.remaining > 0 and not lot.valid_on(as_of))
    return (balance, max(0, min(redeemable - owed, balance)), sum(lot.remaining for lot in waiting), owed,
            pending_from)


def summary(s: Session, programme: Programme, customer_id: uuid.UUID, as_of: dt.date) -> Summary:
    """Everything the guest card and the API say about a customer's points as of a day
    (the tier with every review due by then applied, read-only)."""
    acc = ledger.account(s, customer_id)
    state = ledger._tier_state(s, programme, customer_id, acc, as_of)
    tier = programme.tiers[state.index] if state.index >= 0 else None
    pool = ledger.lots(s, customer_id) if acc is not None else []
    balance, redeemable, pending, owed, pending_from = _balances(s, acc, pool, as_of)
    start, _ = programme.window(as_of)
    qualifying = ledger.qualifying_value(s, programme, customer_id, start, as_of)
    nxt = programme.tiers[state.index + 1] if state.index + 1 < len(programme.tiers) else None
    keep_needed, keep_by = 0, None
    if tier is not None and state.review_on is not None:
        keep_by = state.review_on - dt.timedelta(days=1)
        wstart, _ = programme.window(keep_by)
        so_far = ledger.qualifying_value(s, programme, customer_id, wstart, as_of)
        keep_needed = max(tier.retention_threshold - so_far, 0)
    return Summary(balance, redeemable, pending, owed, tier, state.since, state.review_on, programme.tier_measure,
                   qualifying, start, nxt, max(nxt.threshold - qualifying, 0) if nxt else 0, keep_needed, keep_by,
                   ledger.lots_by_expiry(pool, as_of), programme.point_value, pending_from)


@dataclass
class HistoryRow:
    entry: LedgerEntry
    staff_name: str
    reward_name: str
    voided: bool
    merged_from: str = ""  # points moved in from this (duplicate) record at a merge
    merged_into: str = ""  # points moved out to this (surviving) record


def history(s: Session, customer_id: uuid.UUID, start: dt.date | None = None, end: dt.date | None = None,
            limit: int | None = 50, locale: str = "en") -> list[HistoryRow]:
    """The customer's ledger entries, newest first (or a period's, for a statement)."""
    q = select(LedgerEntry).where(LedgerEntry.customer_id == customer_id)
    if start is not None:
        q = q.where(LedgerEntry.occurred_on >= start)
    if end is not None:
        q = q.where(LedgerEntry.occurred_on <= end)
    q = q.order_by(LedgerEntry.occurred_on.desc(), LedgerEntry.id.desc())
    if limit:
        q = q.limit(limit)
    entries = s.scalars(q).all()
    staff = {u.id: u.name or u.email for u in s.scalars(
        select(User).where(User.id.in_({e.staff_user_id for e in entries if e.staff_user_id})))}
    rewards = {r.id: r.name_for(locale) for r in s.scalars(
        select(Reward).where(Reward.id.in_({e.reward_id for e in entries if e.reward_id})))}
    voided = set(s.scalars(select(LedgerEntry.reverses_id).where(
        LedgerEntry.reverses_id.in_([e.id for e in entries]), LedgerEntry.kind.in_(("void", "reverse")))))
    others = {(e.detail or {}).get(k) for e in entries for k in ("merged_from", "merged_into")} - {None, ""}
    names = {str(c.id): c.name for c in s.scalars(select(Customer).where(
        Customer.id.in_([uuid.UUID(i) for i in others])))} if others else {}
    return [HistoryRow(e, staff.get(e.staff_user_id, ""), rewards.get(e.reward_id, ""), e.id in voided,
                       names.get((e.detail or {}).get("merged_from"), ""),
                       names.get((e.detail or {}).get("merged_into"), ""))
            for e in entries]


@dataclass
class Statement:
    start: dt.date
    end: dt.date
    opening: int
    closing: int
    earned: int
    spent: int
    other: int
    rows: list


def statement(s: Session, customer_id: uuid.UUID, start: dt.date, end: dt.date, locale: str) -> Statement:
    """A member statement: opening balance, the period's entries, closing balance."""
    if end < start:
        raise ValidationFailed.one("end", _l("The end of the period must not be before its start."))
    if end >= ledger.add_months(start, 60):  # five years, both days included
        raise ValidationFailed.one("end", _l("A statement covers at most five years."))
    opening = int(s.scalar(select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(
        LedgerEntry.customer_id == customer_id, LedgerEntry.occurred_on < start)))
    rows = list(reversed(history(s, customer_id, start, end, limit=None, locale=locale)))
    earned = sum(r.entry.points for r in rows if r.entry.kind == "earn")
    spent = -sum(r.entry.points for r in rows if r.entry.kind == "redeem")
    total = sum(r.entry.points for r in rows)
    return Statement(start, end, opening, opening + total, earned, spent, total - earned + spent, rows)


# --- transactions ---------------------------------------------------------------------------

def _codes(s: Session, tx: Transaction) -> tuple[str, str, str]:
    kind = s.get(TransactionKind, (tx.tenant_id, tx.kind_id))
    loc = s.get(Location, (tx.tenant_id, tx.location_id)) if tx.location_id else None
    dept = s.get(Department, (tx.tenant_id, tx.department_id)) if tx.department_id else None
    return kind.code if kind else "", loc.code if loc else "", dept.code if dept else ""


def award(s: Session, tx: Transaction, customer: Customer, staff_user_id: uuid.UUID | None,
          as_of: dt.date, programme: Programme | None = None, fresh: bool = False,
          referral=ledger.UNREAD) -> ledger.Award:
    """Credit the points a newly recorded transaction earns (by ``programme``, read
    before when the caller has it; ``fresh``, ``referral``: see ``ledger.award_for_transaction``)."""
    return ledger.award_for_transaction(s, programme or programme_of(s), tx, customer, *_codes(s, tx),
                                        staff_user_id, as_of, fresh, referral)


def reverse(s: Session, tx: Transaction, staff_user_id: uuid.UUID | None, reason: str,
            as_of: dt.date) -> list[LedgerEntry]:
    return ledger.reverse_transaction(s, programme_of(s), tx, staff_user_id, reason, as_of)


def get_transaction(s: Session, tx_id: uuid.UUID, for_update: bool = False) -> Transaction:
    """The bound tenant's transaction. ``for_update``: read again and locked for the rest of
    the database transaction, so that of two reversals at the same moment the second sees
    the first (PostgreSQL ``FOR UPDATE``; SQLite's write transactions are exclusive already)."""
    if not for_update:
        tx = s.get(Transaction, (bound_tenant_id(s), tx_id))
    else:
        q = select(Transaction).where(Transaction.id == tx_id).execution_options(populate_existing=True)
        if s.connection().dialect.name == "postgresql":
            q = q.with_for_update()
        tx = s.scalar(q)
    if tx is None:
        raise NotFound("transaction")
    return tx


def get_redemption(s: Session, entry_id: uuid.UUID) -> LedgerEntry:
    entry = s.get(LedgerEntry, (bound_tenant_id(s), entry_id))
    if entry is None or entry.kind != "redeem":
        raise NotFound("redemption")
    return entry


def earning_preview(programme: Programme, amount: Decimal, kind: str,
                    department: str = "") -> list[tuple[Tier | None, int]]:
    """What ``amount`` of ``kind`` (in ``department``: its category multiplier) earns at
    each tier (for the settings preview)."""
    tiers = list(programme.tiers) or [None]
    return [(t, programme.earn(amount, 1, kind, dt.date.min, department=department,
                               tier_code=t.code if t else "").points) for t in tiers]


# --- referrals ---------------------------------------------------------------------------

def set_referrer(s: Session, customer: Customer, referrer: Customer, recorded_by_id: uuid.UUID | None) -> Referral:
    """Record who referred ``customer``: once, and before the customer's first transaction,
    which gives the referral rewards (a customer with business already is not a new one)."""
    if referrer.id == customer.id:
        raise ValidationFailed.one("referrer", _l("A customer cannot refer themselves."))
    refuse_if_merged(customer)
    refuse_if_merged(referrer)
    if s.scalar(select(Referral).where(Referral.customer_id == customer.id)) is not None:
        raise ValidationFailed.one("referrer", _l("This customer's referrer is already recorded."))
    if has_transactions(s, customer.id):
        raise ValidationFailed.one("referrer", NOT_NEW_MESSAGE)
    ref = Referral(customer_id=customer.id, referrer_id=referrer.id, recorded_by_id=recorded_by_id)
    s.add(ref)
    s.flush()
    return ref


NOT_NEW_MESSAGE = _l("A referral is recorded for a new customer, before the first transaction that gives its "
                     "rewards: this customer already has transactions.")


def has_transactions(s: Session, customer_id: uuid.UUID) -> bool:
    return s.scalar(select(Transaction.id).where(Transaction.customer_id == customer_id).limit(1)) is not None


def referrer_of(s: Session, customer_id: uuid.UUID) -> Customer | None:
    ref = ledger.referral_of(s, customer_id)
    return s.get(Customer, (ref.tenant_id, ref.referrer_id)) if ref else None


# --- rewards catalogue ---------------------------------------------------------------------------

def list_rewards(s: Session, active_only: bool = False, as_of: dt.date | None = None,
                 location_code: str = "") -> list[Reward]:
    rewards = s.scalars(select(Reward).order_by(Reward.points_cost, Reward.code)).all()
    if active_only:
        rewards = [r for r in rewards if ledger.reward_available(r, as_of, location_code)]
    return rewards


def get_reward(s: Session, reward_id: uuid.UUID) -> Reward:
    r = s.get(Reward, (bound_tenant_id(s), reward_id))
    if r is None:
        raise NotFound("reward")
    return r


def reward_by_code(s: Session, code: str) -> Reward | None:
    """The bound tenant's reward with this code (active or not), or None."""
    return s.scalar(select(Reward).where(Reward.code == code))


def get_reward_by_code(s: Session, code: str) -> Reward:
    r = reward_by_code(s, code)
    if r is None:
        raise NotFound("reward")
    return r


def _date(errors: dict, data: dict, key: str) -> dt.date | None:
    raw = data.get(key)
    if raw in (None, ""):
        return None
    if isinstance(raw, dt.date):
        return raw
    try:
        return dt.date.fromisoformat(str(raw).strip())
    except ValueError:
        errors[key] = [_l("Enter a date such as 2026-03-31.")]
        return None


def save_reward(s: Session, data: dict, reward: Reward | None = None) -> Reward:
    """Create or change a reward: code (unique), names, points cost, optional stock,
    active dates and locations. Raises ValidationFailed per field; nothing written then."""
    errors: dict[str, list] = {}
    values: dict = {}
    for key, limit in (("code", 40), ("name_zh", 120), ("name_en", 120)):
        v = str(data.get(key) or "").replace("\x00", "").strip()  # PostgreSQL refuses NUL in text
        if not v:
            errors[key] = [_l("This field is required.")]
        elif len(v) > limit:
            errors[key] = [_l("At most %(n)s characters.", n=limit)]
        elif key == "code" and not CODE_RE.match(v):
            errors[key] = [CODE_RULE]  # the API and the redeem form name rewards by code
        values[key] = v
    for key, required in (("points_cost", True), ("stock", False)):
        raw = str(data.get(key) if data.get(key) is not None else "").strip().replace(",", "")
        if not raw:
            if required:
                errors[key] = [_l("This field is required.")]
            values[key] = None
            continue
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if not 0 <= n <= 10_000_000 or (key == "points_cost" and n == 0):
            errors[key] = [_l("Enter a whole number from %(min)s to %(max)s.", min=1 if key == "points_cost" else 0,
                              max="10,000,000")]
        values[key] = n
    values["active_from"] = _date(errors, data, "active_from")
    values["active_until"] = _date(errors, data, "active_until")
    if values["active_from"] and values["active_until"] and values["active_until"] < values["active_from"]:
        errors["active_until"] = [_l("The end must not be before the start.")]
    codes = data.get("location_codes") or []
    if isinstance(codes, str):
        codes = [c.strip() for c in codes.split(",") if c.strip()]
    known = set(s.scalars(select(Location.code)))
    if any(c not in known for c in codes):
        errors["location_codes"] = [_l("Choose one of the listed values.")]
    values["location_codes"] = sorted(set(codes))
    values["active"] = bool(data.get("active", True)) and data.get("active") not in ("", "0", "false", "off")
    if values["code"] and not errors.get("code"):
        other = s.scalar(select(Reward).where(Reward.code == values["code"]))
        if other is not None and other is not reward:
            errors["code"] = [_l("Another reward already has this code.")]
    if errors:
        raise ValidationFailed(errors)
    if reward is None:
        reward = Reward(**values)
        s.add(reward)
    else:
        for k, v in values.items():
            setattr(reward, k, v)
    s.flush()
    return reward


# --- goodwill budget -----------------------------------------------------------------------------

@dataclass
class BudgetRow:
    user: User
    points: int
    value: Decimal
    budget: Decimal


def goodwill_report(s: Session, programme: Programme, month: dt.date) -> list[BudgetRow]:
    """Goodwill points each member granted in ``month`` against the monthly budget."""
    start = month.replace(day=1)
    end = ledger.add_months(start, 1)
    used = dict(s.execute(select(LedgerEntry.staff_user_id, func.sum(LedgerEntry.points)).where(
        LedgerEntry.goodwill.is_(True), LedgerEntry.occurred_on >= start, LedgerEntry.occurred_on < end)
        .group_by(LedgerEntry.staff_user_id)).all())
    members = s.execute(select(User, Membership.role, Membership.active).join(Membership, Membership.user_id == User.id)
                        .order_by(User.name, User.email)).all()
    rows = []
    for user, role, active in members:
        pts = int(used.get(user.id) or 0)
        # Those with a budget: active staff and managers (a member deactivated since shows
        # only for a month they granted goodwill in).
        if pts or (active and Role(role).rank < Role.owner.rank):
            rows.append(BudgetRow(user, pts, programme.points_value(pts), programme.goodwill_budget))
    return rows


def parse_month(raw, as_of: dt.date) -> dt.date:
    if not raw:
        return as_of.replace(day=1)
    try:
        month = dt.date.fromisoformat(str(raw).strip() + "-01")
    except ValueError:
        month = None
    if month is None or not 1900 <= month.year <= 9998:
        raise ValidationFailed.one("month", _l("Enter a month such as 2026-03."))
    return month


def parse_day(raw, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(raw).strip())
    except ValueError:
        raise ValidationFailed.one(field, _l("Enter a date such as 2026-03-31."))


def parse_decimal(raw, field: str) -> Decimal:
    try:
        d = Decimal(str(raw).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        d = None
    if d is None or not d.is_finite() or d < 0 or d > 100_000_000:
        raise ValidationFailed.one(field, _l("Enter an amount such as 1280.00."))
    return d


# --- daily jobs ------------------------------------------------------------------------------------

@jobs.job("expire-points")
def expire_points_job(s: Session, as_of: dt.date) -> str | None:
    n = ledger.expire_due(s, as_of)
    return f"{n} points expired" if n else None


@jobs.job("review-tiers")
def review_tiers_job(s: Session, as_of: dt.date) -> str | None:
    n = ledger.review_tiers(s, programme_of(s), as_of)
    return f"{n} tiers reviewed and changed" if n else None


# --- merges ------------------------------------------------------------------------------------------

def _merge_points(s: Session, survivor: Customer, duplicate: Customer,
                  actor_user_id: uuid.UUID | None) -> dict[str, int] | None:
    """Merge hook: the duplicate's points (lots with their dates, or debt) and higher
    tier go to the survivor, as entries of the staff member who merges."""
    if ledger.account(s, duplicate.id) is None:
        return None
    tenant = s.get(Tenant, bound_tenant_id(s))
    moved = ledger.transfer_all(s, programme_of(s), duplicate.id, survivor.id, actor_user_id,
                                clock.today(tenant.timezone), "merge")
    return {"points": moved}


MERGE_HOOKS.append(_merge_points)


def accounts_count(s: Session) -> int:
    return int(s.scalar(select(func.count()).select_from(LoyaltyAccount)))


# --- loyalty admin screens (helper: loyalty admin) -----------------------------------------------

def transactions_by_id(s: Session, ids) -> dict[uuid.UUID, tuple[Transaction, TransactionKind | None]]:
    """The transactions ledger entries belong to, with their kinds (for a statement)."""
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    txs = s.scalars(select(Transaction).where(Transaction.id.in_(ids))).all()
    kinds = {k.id: k for k in s.scalars(select(TransactionKind).where(
        TransactionKind.id.in_({t.kind_id for t in txs})))}
    return {t.id: (t, kinds.get(t.kind_id)) for t in txs}


def set_reward_active(s: Session, reward: Reward, active: bool) -> Reward:
    """Take a reward off the catalogue (staff can no longer redeem it) or put it back."""
    reward.active = bool(active)
    s.flush()
    return reward


# --- guest card (helper: loyalty-card) -------------------------------------------------------

@dataclass
class CardHistoryRow:
    entry: LedgerEntry
    staff_name: str
    reward_name: str
    voided: bool                  # a redemption voided, or an earning reversed
    balance_after: int            # the balance once this entry (and every older one) counted
    transaction: Transaction | None
    kind: TransactionKind | None  # the transaction's kind
    merged_from: str = ""
    merged_into: str = ""


def card_history(s: Session, customer_id: uuid.UUID, limit: int = 50, locale: str = "en") -> list[CardHistoryRow]:
    """The latest ledger entries (newest first) with the balance after each and the
    transaction each belongs to."""
    rows = history(s, customer_id, limit=limit, locale=locale)
    txs = transactions_by_id(s, [r.entry.transaction_id for r in rows])
    balance = ledger_balance(s, customer_id)
    out = []
    for r in rows:
        tx, kind = txs.get(r.entry.transaction_id, (None, None))
        out.append(CardHistoryRow(r.entry, r.staff_name, r.reward_name, r.voided, balance, tx, kind,
                                  r.merged_from, r.merged_into))
        balance -= r.entry.points
    return out


@dataclass
class TierHistoryRow:
    change: TierChange
    transaction: Transaction | None  # an undo: the reversed transaction
    kind: TransactionKind | None

    @property
    def what(self) -> str:
        """The change's kind, with a review that kept the tier told apart ("kept")."""
        c = self.change
        return "kept" if c.kind == "review" and c.from_code == c.to_code else c.kind


def tier_history(s: Session, customer_id: uuid.UUID, limit: int = 20) -> list[TierHistoryRow]:
    """The latest changes of the customer's tier, newest first; an undone upgrade with the
    reversal that undid it."""
    changes = s.scalars(select(TierChange).where(TierChange.customer_id == customer_id)
                        .order_by(TierChange.created_at.desc(), TierChange.id.desc()).limit(limit)).all()
    txs = transactions_by_id(s, [c.transaction_id for c in changes])
    return [TierHistoryRow(c, *txs.get(c.transaction_id, (None, None))) for c in changes]


def tier_code_of(s: Session, customer_id: uuid.UUID) -> str | None:
    """The code of the customer's stored tier, or None (no account, or no tier)."""
    acc = ledger.account(s, customer_id)
    return (acc.tier_code or None) if acc is not None else None


def ledger_balance(s: Session, customer_id: uuid.UUID) -> int:
    acc = ledger.account(s, customer_id)
    return acc.balance if acc is not None else 0


def points_earned_by(s: Session, tx: Transaction) -> int:
    """What ``tx`` credited its own customer (the points a reversal takes back): all it
    earned but the referrer's reward, on whichever customer's account (a merged duplicate
    keeps the entries of the transactions the merge moved to the survivor)."""
    return int(s.scalar(select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(
        LedgerEntry.transaction_id == tx.id, LedgerEntry.kind == "earn",
        LedgerEntry.idempotency_key.not_like("referral:%:referrer"))))


@dataclass
class GoodwillLeft:
    limited: bool                 # False: owners, whom the budget does not bind
    budget: Decimal               # per member per month, in currency
    used_points: int
    left_points: int
    left_value: Decimal


def goodwill_left(s: Session, programme: Programme, staff_user_id: uuid.UUID, role: Role,
                  as_of: dt.date) -> GoodwillLeft:
    """What ``staff_user_id`` may still grant as goodwill in the month of ``as_of``."""
    used = ledger.goodwill_used(s, staff_user_id, as_of)
    budget = programme.goodwill_budget
    left = max(programme.goodwill_budget_points - used, 0)
    return GoodwillLeft(role.rank < Role.owner.rank, budget, used, left, programme.points_value(left))


# --- API helper (saas/api/loyalty.py: reversals, redemptions, balances) ------------------------

def balances(s: Session, customer_id: uuid.UUID, as_of: dt.date) -> tuple[int, int]:
    """(balance, redeemable balance) of a customer as of a day, counted as ``summary`` does
    (without the tier work)."""
    acc = ledger.account(s, customer_id)
    pool = ledger.lots(s, customer_id) if acc is not None else []
    balance, redeemable, _pending, _owed, _from = _balances(s, acc, pool, as_of)
    return balance, redeemable

