"""The rules that write the loyalty ledger. See saas/loyalty/models.py for the books.

Every write locks the customer's account first: on PostgreSQL ``SELECT ... FOR NO KEY
UPDATE`` of the customer row (it exists before the account does, so two first awards
cannot both create the account; NO KEY leaves the key-share locks of inserts that
reference the customer alone), on SQLite the write transaction is already exclusive
(``BEGIN IMMEDIATE``, see saas/db.py). Under that lock the balance is read, checked and
changed, so two tablets redeeming the same balance cannot both succeed.

Every function takes the business date ``as_of``; none reads the clock.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from sqlalchemy import bindparam, exists, func, select, union_all, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from saas.auth.models import Role
from saas.clock import now_utc
from saas.customers.models import Customer, Transaction
from saas.customers.services import MERGED_MESSAGE
from saas.db import bound_tenant_id, insert_now, new_id
from saas.errors import NotFound, ValidationFailed
from saas.loyalty.models import LOT_KINDS, LedgerEntry, LotAllocation, LoyaltyAccount, Referral, Reward, TierChange
from saas.loyalty.programme import MAX_POINTS, Programme, add_months

EXPIRY_NOTICE_DAYS = 90


# --- reading the books ------------------------------------------------------------------

@dataclass
class Lot:
    entry: LedgerEntry
    remaining: int

    def valid_on(self, day: dt.date) -> bool:
        return self.entry.expires_on is None or day < self.entry.expires_on

    def redeemable_on(self, day: dt.date) -> bool:
        return self.valid_on(day) and (self.entry.available_on or self.entry.occurred_on) <= day


def _lot_order(lot: Lot):
    e = lot.entry
    return (e.expires_on is None, e.expires_on or dt.date.max, e.occurred_on, e.id)


def lots(s: Session, customer_id: uuid.UUID) -> list[Lot]:
    """The customer's lots with what is left of each, soonest expiring first."""
    entries = s.scalars(select(LedgerEntry).where(
        LedgerEntry.customer_id == customer_id, LedgerEntry.kind.in_(LOT_KINDS), LedgerEntry.points > 0)).all()
    used = dict(s.execute(select(LotAllocation.lot_id, func.sum(LotAllocation.points))
                          .where(LotAllocation.customer_id == customer_id).group_by(LotAllocation.lot_id)).all())
    return sorted((Lot(e, e.points - int(used.get(e.id) or 0)) for e in entries), key=_lot_order)


def debts(s: Session, customer_id: uuid.UUID) -> list[tuple[LedgerEntry, int]]:
    """Debits not (yet) covered by any lot, oldest first, with the uncovered points."""
    debits = s.scalars(select(LedgerEntry).where(LedgerEntry.customer_id == customer_id, LedgerEntry.points < 0)
                       .order_by(LedgerEntry.occurred_on, LedgerEntry.id)).all()
    if not debits:
        return []
    covered = dict(s.execute(select(LotAllocation.entry_id, func.sum(LotAllocation.points))
                             .where(LotAllocation.customer_id == customer_id).group_by(LotAllocation.entry_id)).all())
    out = []
    for d in debits:
        left = -d.points - int(covered.get(d.id) or 0)
        if left > 0:
            out.append((d, left))
    return out


def account(s: Session, customer_id: uuid.UUID) -> LoyaltyAccount | None:
    return s.scalar(select(LoyaltyAccount).where(LoyaltyAccount.customer_id == customer_id))


def ledger_sum(s: Session, customer_id: uuid.UUID) -> int:
    return int(s.scalar(select(func.coalesce(func.sum(LedgerEntry.points), 0))
                        .where(LedgerEntry.customer_id == customer_id)))


# --- writing ----------------------------------------------------------------------------

def lock_account(s: Session, customer_id: uuid.UUID, new_business: bool = False) -> LoyaltyAccount:
    """The customer's account, locked for this transaction (created on first use), read
    afresh (an account loaded before the lock may be stale). ``new_business``: refuse
    (``customer_merged``) a customer merged into another, as it stands once locked: a
    merge may have committed since the customer was read."""
    params = {"customer_id": customer_id}
    if s.connection().dialect.name == "postgresql":
        merged_into = s.execute(_LOCK_CUSTOMER, params).scalar()
        acc = s.scalar(_ACCOUNT_FOR_UPDATE, params)
    else:  # inside the write transaction (exclusive): what is read now is how it stands
        merged_into = s.execute(_MERGED_INTO, params).scalar() if new_business else None
        acc = s.scalar(_ACCOUNT_OF, params)
    if new_business and merged_into is not None:
        raise ValidationFailed.one("", MERGED_MESSAGE, code="customer_merged")
    if acc is None:
        acc = LoyaltyAccount(customer_id=customer_id, balance=0, tier_code="")
        s.add(acc)
        s.flush()
    return acc


_ACCOUNT = LoyaltyAccount.__table__
_MOVE_BALANCE = update(_ACCOUNT).where(
    _ACCOUNT.c.tenant_id == bindparam("t"), _ACCOUNT.c.id == bindparam("a")).values(
    balance=_ACCOUNT.c.balance + bindparam("points"), updated_at=bindparam("now"))


# Built once (every award locks an account).
_ACCOUNT_OF = select(LoyaltyAccount).where(LoyaltyAccount.customer_id == bindparam("customer_id")).execution_options(
    populate_existing=True)
_ACCOUNT_FOR_UPDATE = _ACCOUNT_OF.with_for_update()
_MERGED_INTO = select(Customer.merged_into_id).where(Customer.id == bindparam("customer_id"))
_LOCK_CUSTOMER = _MERGED_INTO.with_for_update(key_share=True)  # FOR NO KEY UPDATE


def _post(s: Session, acc: LoyaltyAccount, kind: str, points: int, on: dt.date, **fields) -> LedgerEntry:
    """A ledger entry and the account's balance moved by its points, written at once (Core
    statements: the unit of work cost more than both, under SQLite's write lock)."""
    entry = LedgerEntry(id=new_id(), customer_id=acc.customer_id, kind=kind, points=points, occurred_on=on,
                        **fields)
    insert_now(s, entry)  # flushes first what is pending: the (locked) account among it
    now = now_utc()
    s.connection().execute(_MOVE_BALANCE, {"t": acc.tenant_id, "a": acc.id, "points": points, "now": now})
    set_committed_value(acc, "balance", acc.balance + points)
    set_committed_value(acc, "updated_at", now)
    return entry


def _allocate(s: Session, acc: LoyaltyAccount, entry: LedgerEntry, lot: Lot, points: int) -> None:
    s.add(LotAllocation(customer_id=acc.customer_id, entry_id=entry.id, lot_id=lot.entry.id, points=points))
    lot.remaining -= points


def _take(s: Session, acc: LoyaltyAccount, debit: LedgerEntry, need: int, pool: list[Lot], on: dt.date,
          redeemable_only: bool = False) -> int:
    """Cover ``need`` points of ``debit`` from ``pool`` in its order; returns what is left."""
    for lot in pool:
        if need <= 0:
            break
        if lot.remaining <= 0 or not (lot.redeemable_on(on) if redeemable_only else lot.valid_on(on)):
            continue
        take = min(need, lot.remaining)
        _allocate(s, acc, debit, lot, take)
        need -= take
    return need


def _credit(s: Session, acc: LoyaltyAccount, programme: Programme, kind: str, points: int, on: dt.date,
            pending: bool = True, **fields) -> LedgerEntry:
    """A new lot; when the account owed points, the lot pays that debt first."""
    owed = acc.balance < 0
    entry = _post(s, acc, kind, points, on, available_on=programme.available_on(on) if pending else on,
                  expires_on=programme.expires_on(on), **fields)
    if owed:
        s.flush()
        settle_debts(s, acc, on)
    return entry


def settle_debts(s: Session, acc: LoyaltyAccount, on: dt.date) -> None:
    """Pay uncovered debits from the lots that have points left (soonest expiring first)."""
    owed = debts(s, acc.customer_id)
    if not owed:
        return
    pool = lots(s, acc.customer_id)
    for debit, left in owed:
        _take(s, acc, debit, left, pool, on)


def _refuse(field: str, message, code: str):
    raise ValidationFailed.one(field, message, code)


def _existing(s: Session, key: str | None) -> LedgerEntry | None:
    if not key:
        return None
    return s.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))


# --- tiers ------------------------------------------------------------------------------

def qualifying_value(s: Session, programme: Programme, customer_id: uuid.UUID, start: dt.date, end: dt.date):
    """What counts towards tiers between ``start`` and ``end`` (both included): points
    earned (not reversed; on the records merged into the customer too), spend or number
    of visits (transactions not reversed). Core statements with the tenant named: every
    award asks (through the ORM it costs more than the sum itself)."""
    if s.new or s.dirty:
        s.flush()  # as the ORM would before a query: this award's entry counts
    stmt = _QUALIFYING[programme.tier_measure]
    value = s.connection().execute(stmt, {"tenant_id": bound_tenant_id(s), "customer_id": customer_id,
                                          "start": start, "end": end}).scalar()
    return Decimal(value) if programme.tier_measure == "spend" else int(value)


def _qualifying_statements() -> dict:
    e, t, c = LedgerEntry.__table__, Transaction.__table__, Customer.__table__
    rev = e.alias("reversal")
    # The customer's own, and those of the records merged into it (the merge moved their
    # transactions, so spend and visits count them already; ledger entries stay where they are).
    holders = union_all(select(bindparam("customer_id", type_=e.c.customer_id.type)),
                        select(c.c.id).where(c.c.tenant_id == bindparam("tenant_id"),
                                             c.c.merged_into_id == bindparam("customer_id")))
    earned = select(func.coalesce(func.sum(e.c.points), 0)).where(
        e.c.tenant_id == bindparam("tenant_id"), e.c.customer_id.in_(holders), e.c.kind == "earn",
        e.c.occurred_on >= bindparam("start"), e.c.occurred_on <= bindparam("end"),
        ~exists().where(rev.c.tenant_id == e.c.tenant_id, rev.c.reverses_id == e.c.id))
    where = (t.c.tenant_id == bindparam("tenant_id"), t.c.customer_id == bindparam("customer_id"),
             t.c.reversed_on.is_(None), t.c.occurred_on >= bindparam("start"), t.c.occurred_on <= bindparam("end"))
    return {"points_earned": earned,
            "spend": select(func.coalesce(func.sum(t.c.amount), 0)).where(*where),
            "visits": select(func.count(t.c.id)).where(*where)}


_QUALIFYING = _qualifying_statements()


@dataclass
class TierState:
    index: int
    since: dt.date | None
    review_on: dt.date | None
    # ("review" | "upgrade", day, (index, since, review_on) before, the same after)
    changes: list = field(default_factory=list)

    def now(self) -> tuple:
        return self.index, self.since, self.review_on


def tier_state(programme: Programme, code: str, since: dt.date | None, review_on: dt.date | None,
               value_in_window, as_of: dt.date, upgrade_on: dt.date | None = None) -> TierState:
    """The tier as of ``as_of``, from the stored one: every review due by then keeps the
    tier or lowers it by one level (to what the value still earns, never lower); then an
    upgrade as soon as a higher threshold is met. ``value_in_window(end)`` is the
    qualifying value in the window ending on ``end``. ``upgrade_on``: the day of the
    transaction that met it, when earlier (a stay posted the day after): the tier dates
    from then, so that the review's window holds it as it would have the same day."""
    state = TierState(programme.tier_index(code), since, review_on)
    while state.index >= 0 and state.review_on is not None and state.review_on <= as_of:
        day = state.review_on
        value = value_in_window(day - dt.timedelta(days=1))
        tier = programme.tiers[state.index]
        before = state.now()
        if value < tier.retention_threshold:
            new = max(state.index - 1, programme.qualified_index(value))
            if new < state.index:
                state.index, state.since = new, day
        state.review_on = programme.next_review(state.since, after=day)
        if state.index < 0:
            state.since = state.review_on = None
        state.changes.append(("review", day, before, state.now()))  # kept or lowered
    reached = programme.qualified_index(value_in_window(as_of))
    if reached > state.index:
        before = state.now()
        day = as_of
        # (when the value had reached the tier by then, and not before the tier it replaces
        # began, unless that is none or the base tier a new account starts with)
        if (upgrade_on is not None and upgrade_on < as_of and programme.next_review(upgrade_on) > as_of
                and (state.index <= 0 or state.since is None or state.since <= upgrade_on)
                and programme.qualified_index(value_in_window(upgrade_on)) >= reached):
            day = upgrade_on
        state.index, state.since, state.review_on = reached, day, programme.next_review(day)
        state.changes.append(("upgrade", day, before, state.now()))
    if state.index < 0:
        state.since = state.review_on = None
    return state


def _tier_state(s: Session, programme: Programme, customer_id: uuid.UUID, acc: LoyaltyAccount | None,
                as_of: dt.date, leave_out: Transaction | None = None, upgrade_on: dt.date | None = None) -> TierState:
    def value(end):
        start, _ = programme.window(end)
        v = qualifying_value(s, programme, customer_id, start, end)
        if leave_out is not None and leave_out.reversed_on is None and start <= leave_out.occurred_on <= end:
            v -= {"spend": leave_out.amount, "visits": 1}.get(programme.tier_measure, 0)
        return v
    if acc is None:
        return tier_state(programme, "", None, None, value, as_of, upgrade_on)
    return tier_state(programme, acc.tier_code, acc.tier_since, acc.tier_review_on, value, as_of, upgrade_on)


def _code(programme: Programme, index: int) -> str:
    return programme.tiers[index].code if index >= 0 else ""


def _record_change(s: Session, programme: Programme, customer_id: uuid.UUID, kind: str, day: dt.date,
                   before: tuple, after: tuple, **fields) -> TierChange:
    change = TierChange(customer_id=customer_id, kind=kind, changed_on=day,
                        from_code=_code(programme, before[0]), from_since=before[1], from_review_on=before[2],
                        to_code=_code(programme, after[0]), to_since=after[1], to_review_on=after[2], **fields)
    s.add(change)
    return change


def refresh_tier(s: Session, programme: Programme, acc: LoyaltyAccount, as_of: dt.date,
                 leave_out: Transaction | None = None, upgrade_on: dt.date | None = None) -> bool:
    """Store the tier as of ``as_of`` on the (locked) account, and each change on the way
    (``TierChange``); True when it changed. ``leave_out``: a transaction not to count yet;
    ``upgrade_on``: the day of the transaction an upgrade comes with (``tier_state``)."""
    state = _tier_state(s, programme, acc.customer_id, acc, as_of, leave_out, upgrade_on)
    code = _code(programme, state.index)
    changed = (code, state.since, state.review_on) != (acc.tier_code, acc.tier_since, acc.tier_review_on)
    if changed:
        for kind, day, before, after in state.changes:
            _record_change(s, programme, acc.customer_id, kind, day, before, after)
        acc.tier_code, acc.tier_since, acc.tier_review_on = code, state.since, state.review_on
        acc.updated_at = now_utc()
    return changed


def undo_upgrades(s: Session, programme: Programme, acc: LoyaltyAccount, tx: Transaction, as_of: dt.date) -> bool:
    """After ``tx`` was reversed: take back the upgrades it carried. Walking back from the
    account's current tier, each upgrade (not yet undone, and not followed by a review or
    another change: its tier, since and review day are still the account's) is checked
    again as the books now stand: the qualifying value in the window that ended on the day
    of the upgrade. Where it no longer reaches the upgrade's tier, the account goes back to
    what the upgrade replaced (tier, since, review day), or to the highest tier the value
    still reaches between the two, which stops the walk. A review that has passed stands,
    and so does everything before it. A tier taken over at a merge walks on through the
    upgrades of the record it came from, back to no lower than the survivor's own tier
    before the merge. True when the tier changed."""
    changes = s.scalars(select(TierChange).where(
        TierChange.customer_id.in_([acc.customer_id, *merged_into(s, acc.customer_id)]))
                        .order_by(TierChange.created_at.desc(), TierChange.id.desc())).all()
    undone = {c.undoes_id for c in changes if c.kind == "undo"}
    ups = [c for c in changes if c.kind == "upgrade" and c.id not in undone]
    takeovers = {(c.to_code, c.to_since, c.to_review_on): c for c in changes
                 if c.kind == "merge" and c.customer_id == acc.customer_id}
    changed = False
    while True:
        current = (acc.tier_code, acc.tier_since, acc.tier_review_on)
        up = next((c for c in ups if (c.to_code, c.to_since, c.to_review_on) == current
                   and (c.customer_id == acc.customer_id or current in takeovers)), None)
        if up is None:
            return changed
        # The current tier is one the programme has: reverse_transaction refreshed it first.
        target, floor = programme.tier_index(up.to_code), programme.tier_index(up.from_code)
        start, _ = programme.window(up.changed_on)
        value = qualifying_value(s, programme, acc.customer_id, start, up.changed_on)  # flushes what came before
        if value >= programme.tiers[target].threshold:
            return changed
        ups.remove(up)
        replaced = (floor, up.from_since, up.from_review_on)
        takeover = takeovers.get(current) if up.customer_id != acc.customer_id else None
        if takeover is not None and programme.tier_index(takeover.from_code) >= floor:
            # Back to the survivor's own tier before the merge, unless the record had a higher one.
            floor = programme.tier_index(takeover.from_code)
            replaced = (floor, takeover.from_since, takeover.from_review_on)
        reached = max(floor, programme.qualified_index(value))
        after = (reached, up.to_since, up.to_review_on) if reached > floor else replaced
        _record_change(s, programme, acc.customer_id, "undo", as_of, (target, up.to_since, up.to_review_on), after,
                       transaction_id=tx.id, undoes_id=up.id)
        acc.tier_code, acc.tier_since, acc.tier_review_on = _code(programme, after[0]), after[1], after[2]
        acc.updated_at = now_utc()
        changed = True
        if after is not replaced:
            # The upgrade reached less than it did: it stands, to the lower tier, and the walk ends.
            _record_change(s, programme, acc.customer_id, "upgrade", up.changed_on, replaced, after)
            return changed


# --- earning ------------------------------------------------------------------------------

# ``award_for_transaction(referral=UNREAD)``: not read by the caller.
UNREAD = object()
_REFERRAL_OF = select(Referral).where(Referral.customer_id == bindparam("customer_id"))


def referral_of(s: Session, customer_id: uuid.UUID) -> Referral | None:
    """Who referred the customer (their Referral), or None."""
    return s.scalar(_REFERRAL_OF, {"customer_id": customer_id})


@dataclass
class Award:
    points: int
    entries: list
    balance: int
    tier_code: str


def _bonus_keys(s: Session, keys_of) -> tuple | None:
    """The keys to give a once-only bonus with (``keys_of(1)``, or ``keys_of(2)`` ... once
    the earlier ones were reversed with their transaction), None while one given stands."""
    n = 1
    while True:
        given = [e for e in (_existing(s, k) for k in keys_of(n)) if e is not None]
        if not given:
            return keys_of(n)
        if any(s.scalar(select(LedgerEntry.id).where(LedgerEntry.reverses_id == e.id, LedgerEntry.kind == "reverse")
                        ) is None for e in given):
            return None
        n += 1


def award_for_transaction(s: Session, programme: Programme, tx: Transaction, customer: Customer,
                          kind_code: str, location_code: str, department_code: str,
                          staff_user_id: uuid.UUID | None, as_of: dt.date, fresh: bool = False,
                          referral: Referral | None | object = UNREAD) -> Award:
    """Credit what ``tx`` earns (once: the entries carry keys made from its id), the
    birthday-month bonus and the referral rewards it triggers; then upgrade the tier.
    ``fresh``: ``tx`` was recorded in this database transaction, so nothing can have been
    credited for it yet (its own key is not looked up; a second call would meet the
    unique key instead). ``referral``: the customer's (``referral_of``), when the caller
    read it before it took the write lock; whether its rewards were given is read here."""
    acc = lock_account(s, customer.id, new_business=True)
    if not acc.tier_code or (acc.tier_review_on is not None and acc.tier_review_on <= as_of):
        # A review is due (or the account is new): the tier multiplier may change. The tier
        # it earns at is the one before this transaction (which spend and visits count).
        refresh_tier(s, programme, acc, as_of, leave_out=tx)
    entries = []
    earning = programme.earn(tx.amount, tx.quantity, kind_code, tx.occurred_on, location_code, department_code,
                             acc.tier_code)
    on = tx.occurred_on

    def credit(target: LoyaltyAccount, points: int, key: str, reason: str, detail: dict, new: bool = False) -> None:
        if points > 0 and (new or _existing(s, key) is None):
            entries.append(_credit(s, target, programme, "earn", points, on, transaction_id=tx.id,
                                   staff_user_id=staff_user_id, idempotency_key=key, reason=reason, detail=detail))

    credit(acc, earning.points, f"txn:{tx.id}:earn", "", earning.detail, new=fresh)
    # A once-only bonus whose transaction was refunded comes again with the next one.
    if programme.birthday_bonus and customer.birthday and customer.birthday.month == on.month:
        def birthday_keys(cid):
            return lambda n: (f"birthday:{cid}:{on.year}" + (f":{n}" if n > 1 else ""),)
        key = _bonus_keys(s, birthday_keys(customer.id))
        # Once a year for the person: a record merged into this one may have had it this year.
        if key is not None and all(_bonus_keys(s, birthday_keys(cid)) is not None
                                   for cid in merged_into(s, customer.id)):
            credit(acc, programme.birthday_bonus, key[0], "birthday", {"bonus": programme.birthday_bonus})
    if programme.referrer_points or programme.referred_points:
        ref = referral_of(s, customer.id) if referral is UNREAD else referral
        keys = None if ref is None else _bonus_keys(s, lambda n: tuple(
            f"referral:{customer.id}:" + (f"{n}:" if n > 1 else "") + side for side in ("referred", "referrer")))
        if keys is not None:
            credit(acc, programme.referred_points, keys[0], "referral", {})
            if programme.referrer_points:
                # A referrer merged since is their survivor, who holds their points now.
                referrer = lock_account(s, survivor_of(s, ref.referrer_id))
                credit(referrer, programme.referrer_points, keys[1], "referral", {"referred": str(customer.id)})
    s.flush()
    counts = bool(entries) or programme.tier_measure != "points_earned"
    if counts and programme.tier_index(acc.tier_code) < len(programme.tiers) - 1:
        refresh_tier(s, programme, acc, as_of, upgrade_on=tx.occurred_on)  # as soon as a threshold is met
    for e in entries:
        if e.customer_id != customer.id and programme.tier_measure == "points_earned":
            refresh_tier(s, programme, account(s, e.customer_id), as_of)  # the referrer's reward counts too
    return Award(sum(e.points for e in entries if e.customer_id == customer.id), entries, acc.balance,
                 acc.tier_code)


# --- reversing a transaction ----------------------------------------------------------------

def _expired_from(s: Session, lot_ids: set) -> int:
    """The points the expiry job took from these lots."""
    return int(s.scalar(select(func.coalesce(func.sum(LotAllocation.points), 0))
                        .join(LedgerEntry, LedgerEntry.id == LotAllocation.entry_id)
                        .where(LotAllocation.lot_id.in_(lot_ids), LedgerEntry.kind == "expire")))


def lot_trail(s: Session, lot_id: uuid.UUID) -> set:
    """The lot and every lot made from it since: what a merge (``transfer_all``) or a void
    after one (``void_redemption``) moved on, as an adjust entry keyed ``...:{lot}:out``
    taking from it and its twin ``...:{lot}:in``, a lot of the survivor; merges in a chain
    one after another."""
    found, todo = set(), [lot_id]
    while todo:
        lid = todo.pop()
        found.add(lid)
        keys = s.scalars(select(LedgerEntry.idempotency_key)
                         .join(LotAllocation, LotAllocation.entry_id == LedgerEntry.id)
                         .where(LotAllocation.lot_id == lid, LotAllocation.points > 0,
                                LedgerEntry.kind == "adjust")).all()
        for key in keys:
            if key and key.startswith(("merge:", "void:")) and key.endswith(f":{lid}:out"):
                moved = _existing(s, key.removesuffix("out") + "in")
                if moved is not None and moved.id not in found:
                    todo.append(moved.id)
    return found


def survivor_of(s: Session, customer_id: uuid.UUID) -> uuid.UUID:
    """The customer that ``customer_id`` was merged into (the last of a chain: a merge
    points the customers merged earlier at its survivor), or ``customer_id`` itself; read
    from the database, not a customer loaded earlier (a merge may have committed since)."""
    return s.execute(_MERGED_INTO, {"customer_id": customer_id}).scalar() or customer_id


def merged_into(s: Session, customer_id: uuid.UUID) -> list[uuid.UUID]:
    """The customers merged into ``customer_id`` (their ledger entries stay theirs)."""
    return list(s.scalars(select(Customer.id).where(Customer.merged_into_id == customer_id)))


def reverse_transaction(s: Session, programme: Programme, tx: Transaction, staff_user_id: uuid.UUID | None,
                        reason: str, as_of: dt.date) -> list[LedgerEntry]:
    """Undo what ``tx`` earned (for every customer it credited), taking the points from
    the lot they made, then from other lots; what was already spent becomes debt. Then
    take back the tier upgrades it carried (``undo_upgrades``)."""
    if tx.reversed_on is not None:
        _refuse("transaction", _l("This transaction was already reversed on %(day)s.", day=tx.reversed_on),
                "already_reversed")
    reason = (reason or "").strip()
    if len(reason) > 255:
        _refuse("reason", _l("At most %(n)s characters.", n=255), "validation_failed")
    earned = s.scalars(select(LedgerEntry).where(LedgerEntry.transaction_id == tx.id, LedgerEntry.kind == "earn",
                                                 LedgerEntry.points > 0)
                       .order_by(LedgerEntry.customer_id, LedgerEntry.id)).all()
    # Whose account holds each lot's points now (a merge moved them to the survivor) and
    # which lots they are: the lot itself and those a merge or a void made from it.
    held = {e.id: (survivor_of(s, e.customer_id), lot_trail(s, e.id)) for e in earned}
    out = []
    for customer_id in sorted({customer_id for customer_id, _trail in held.values()}):
        acc = lock_account(s, customer_id)
        pool = lots(s, customer_id)
        for e in (e for e in earned if held[e.id][0] == customer_id):
            # What expired of its lots has left the books already (the expiry job may run
            # before or after the refund: the same books either way).
            trail = held[e.id][1]
            expired = _expired_from(s, trail)
            points = e.points - expired
            rev = _post(s, acc, "reverse", -points, as_of, transaction_id=tx.id, reverses_id=e.id,
                        staff_user_id=staff_user_id, reason=reason, idempotency_key=f"reverse:{e.id}",
                        detail={"expired": expired} if expired else {})
            own = [lot for lot in pool if lot.entry.id in trail]
            left = _take(s, acc, rev, points, own, dt.date.min)  # its own lot, expired or not
            _take(s, acc, rev, left, pool, as_of)
            out.append(rev)
    tx.reversed_on = as_of
    tx.reversed_by_id = staff_user_id
    tx.reverse_reason = reason
    s.flush()
    # What it no longer counts towards: the tier it carried (every measure counts the
    # customer's own transactions; points earned count the referrer's reward too).
    for customer_id in sorted({tx.customer_id} | {customer_id for customer_id, _trail in held.values()}):
        if account(s, customer_id) is None:
            continue  # never earned anything: no tier to take back
        acc = lock_account(s, customer_id)
        refresh_tier(s, programme, acc, as_of)  # reviews due by now stand
        if undo_upgrades(s, programme, acc, tx, as_of):
            refresh_tier(s, programme, acc, as_of)  # what the value reaches today, if more
    s.flush()
    return out


# --- redeeming ----------------------------------------------------------------------------------

def reward_available(reward: Reward, as_of: dt.date, location_code: str = "") -> bool:
    return (reward.active and (reward.active_from is None or reward.active_from <= as_of)
            and (reward.active_until is None or as_of <= reward.active_until)
            and (not reward.location_codes or not location_code or location_code in reward.location_codes)
            and (reward.stock is None or reward.stock > 0))


def _points(raw, field: str = "points") -> int:
    if isinstance(raw, bool):
        raw = None
    if isinstance(raw, str):
        raw = raw.strip().replace(",", "")
        raw = int(raw) if raw.lstrip("-").isdigit() else None
    if not isinstance(raw, int):
        _refuse(field, _l("Enter a whole number of points."), "validation_failed")
    if not -MAX_POINTS <= raw <= MAX_POINTS:
        _refuse(field, _l("Enter a number of points up to %(n)s.", n=f"{MAX_POINTS:,}"), "validation_failed")
    return raw


def redeem(s: Session, programme: Programme, customer: Customer, as_of: dt.date, *, points=None,
           reward: Reward | None = None, staff_user_id: uuid.UUID | None = None, note: str = "",
           location_code: str = "", idempotency_key: str | None = None) -> LedgerEntry:
    """Spend points on a reward of the catalogue or as payment. Refused (422) when the
    account owes points, when the redeemable balance is short, or the reward cannot be
    had; the check and the debit happen under the account lock."""
    note = (note or "").strip()
    if len(note) > 255:
        _refuse("note", _l("At most %(n)s characters.", n=255), "validation_failed")
    if reward is None:
        points = _points(points)
        if points <= 0:
            _refuse("points", _l("Enter a number of points above zero."), "validation_failed")
        if points < programme.min_redeem_points:
            _refuse("points", _l("Use at least %(n)s points at a time.", n=programme.min_redeem_points),
                    "below_minimum")
    previous = _existing(s, idempotency_key)
    if previous is not None:
        return previous
    # A merged customer is refused once locked (a replay of what was done before the merge answered above).
    acc = lock_account(s, customer.id, new_business=True)
    previous = _existing(s, idempotency_key)  # again, now that a concurrent twin has committed
    if previous is not None:
        return previous
    if reward is not None:
        if not reward_available(reward, as_of, location_code):
            _refuse("reward", _l("This reward cannot be redeemed now (inactive, out of stock or not at this "
                                 "location)."), "reward_unavailable")
        if reward.location_codes and not location_code:
            _refuse("location", _l("This reward is given only at %(places)s: name the location where it is "
                                   "redeemed.", places=", ".join(reward.location_codes)), "reward_unavailable")
        points = reward.points_cost
    pool = lots(s, customer.id)
    owed = sum(left for _, left in debts(s, customer.id))
    if acc.balance < 0 or owed:
        _refuse("points", _l("The account owes %(n)s points (a refunded purchase): nothing can be redeemed "
                             "until it is paid back.", n=f"{max(owed, -acc.balance):,}"), "negative_balance")
    redeemable = sum(lot.remaining for lot in pool if lot.remaining > 0 and lot.redeemable_on(as_of))
    if redeemable < points:
        _refuse("points", _l("Not enough points: %(have)s can be redeemed, %(need)s are needed.",
                             have=f"{redeemable:,}", need=f"{points:,}"), "insufficient_points")
    if reward is not None and reward.stock is not None:
        taken = s.execute(update(Reward).where(Reward.id == reward.id, Reward.stock > 0)
                          .values(stock=Reward.stock - 1).execution_options(synchronize_session="fetch"))
        if taken.rowcount != 1:
            _refuse("reward", _l("This reward is out of stock."), "reward_unavailable")
    entry = _post(s, acc, "redeem", -points, as_of, reward_id=reward.id if reward else None,
                  cash_value=None if reward else programme.points_value(points), staff_user_id=staff_user_id,
                  reason=note, idempotency_key=idempotency_key,
                  detail={"location": location_code} if location_code else {})
    left = _take(s, acc, entry, points, pool, as_of, redeemable_only=True)
    assert left == 0, "redeemable balance checked above"
    s.flush()
    return entry


def void_redemption(s: Session, programme: Programme, entry: LedgerEntry, staff_user_id: uuid.UUID | None,
                    reason: str, as_of: dt.date) -> LedgerEntry:
    """Undo a redemption: exactly the lots it took get their points back. A redemption of a
    customer merged since: the lots get them back, then move on to the survivor, as the
    merge moved the rest of them."""
    if entry.kind != "redeem":
        raise NotFound("redemption")
    reason = (reason or "").strip()
    if len(reason) > 255:
        _refuse("reason", _l("At most %(n)s characters.", n=255), "validation_failed")
    acc = lock_account(s, entry.customer_id)
    survivor = survivor_of(s, entry.customer_id)  # as it stands once locked
    accounts = {entry.customer_id: acc}
    if survivor != entry.customer_id:
        accounts[survivor] = lock_account(s, survivor)
    if _existing(s, f"void:{entry.id}") is not None:
        _refuse("redemption", _l("This redemption was already voided."), "already_voided")
    owed = acc.balance < 0
    void = _post(s, acc, "void", -entry.points, as_of, reverses_id=entry.id, reward_id=entry.reward_id,
                 staff_user_id=staff_user_id, reason=reason, idempotency_key=f"void:{entry.id}")
    taken = s.execute(select(LotAllocation.lot_id, LotAllocation.points)
                      .where(LotAllocation.entry_id == entry.id)).all()
    for lot_id, pts in taken:
        s.add(LotAllocation(customer_id=acc.customer_id, entry_id=void.id, lot_id=lot_id, points=-pts))
    if entry.reward_id is not None:
        s.execute(update(Reward).where(Reward.id == entry.reward_id, Reward.stock.is_not(None))
                  .values(stock=Reward.stock + 1).execution_options(synchronize_session="fetch"))
    s.flush()
    if owed:
        # A refund that found its lot spent on this redemption owes what the void now puts
        # back: that lot pays it, expired or not (as when the void comes first).
        pool = lots(s, acc.customer_id)
        for debit, left in debts(s, acc.customer_id):
            if debit.kind == "reverse" and debit.reverses_id is not None:
                trail = lot_trail(s, debit.reverses_id)
                _take(s, acc, debit, left, [lot for lot in pool if lot.entry.id in trail], dt.date.min)
        s.flush()
        settle_debts(s, acc, as_of)
        s.flush()
    if survivor != entry.customer_id:
        _move_lots(s, acc, accounts[survivor], f"void:{entry.id}", as_of, staff_user_id, reason)
        s.flush()
        settle_debts(s, accounts[survivor], as_of)
        s.flush()
    return void


# --- adjusting ------------------------------------------------------------------------------------

def goodwill_used(s: Session, staff_user_id: uuid.UUID, as_of: dt.date) -> int:
    """Goodwill points ``staff_user_id`` granted in the month of ``as_of``."""
    start = as_of.replace(day=1)
    return int(s.scalar(select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(
        LedgerEntry.goodwill.is_(True), LedgerEntry.staff_user_id == staff_user_id,
        LedgerEntry.occurred_on >= start, LedgerEntry.occurred_on < add_months(start, 1))))


def adjust_limit(programme: Programme, role: Role) -> int | None:
    """The largest adjustment ``role`` may make at once (None: any)."""
    if role.rank >= Role.owner.rank:
        return None
    return programme.adjust_limits["manager" if role.rank >= Role.manager.rank else "staff"]


def limit_refusal(programme: Programme, role: Role, points: int):
    """Why ``role`` may not adjust by ``points`` at once (None: it may)."""
    limit = adjust_limit(programme, role)
    if limit is None or abs(points) <= limit:
        return None
    if role.rank >= Role.manager.rank:
        return _l("Your role may adjust at most %(n)s points at a time; ask the owner.", n=f"{limit:,}")
    return _l("Your role may adjust at most %(n)s points at a time; ask a manager.", n=f"{limit:,}")


def adjust(s: Session, programme: Programme, customer: Customer, as_of: dt.date, *, points, reason: str,
           staff_user_id: uuid.UUID | None, role: Role, goodwill: bool = False,
           idempotency_key: str | None = None) -> LedgerEntry:
    """A manual correction (+ or -) with a reason, within the role's limit; goodwill
    (service recovery) also within the staff member's monthly budget."""
    errors: dict[str, list] = {}
    try:
        points = _points(points)
        if points == 0:
            errors["points"] = [_l("Enter a number of points other than zero.")]
    except ValidationFailed as exc:
        errors.update(exc.errors)
    over_limit = None if errors else limit_refusal(programme, role, points)
    reason = (reason or "").strip()
    if not reason:
        errors["reason"] = [_l("Say why: an adjustment needs a reason.")]
    elif len(reason) > 255:
        errors["reason"] = [_l("At most %(n)s characters.", n=255)]
    if over_limit is not None:
        if errors:  # said together, so the second try is not refused again for the other
            raise ValidationFailed({**errors, "points": [over_limit]})
        _refuse("points", over_limit, "over_limit")
    if errors:
        raise ValidationFailed(errors)
    if goodwill:
        if points < 0:
            _refuse("points", _l("Goodwill points are a gift: enter a positive number."), "validation_failed")
        if role.rank < Role.owner.rank and staff_user_id is not None:
            used = goodwill_used(s, staff_user_id, as_of)
            budget = programme.goodwill_budget
            if programme.points_value(used + points) > budget:
                left = max(0, programme.goodwill_budget_points - used)
                _refuse("points", _l("This is over your goodwill budget for the month: %(left)s points left.",
                                     left=f"{left:,}"), "over_budget")
    previous = _existing(s, idempotency_key)
    if previous is not None:
        return previous
    # A merged customer is refused once locked (a replay of what was done before the merge answered above).
    acc = lock_account(s, customer.id, new_business=True)
    previous = _existing(s, idempotency_key)  # again, now that a concurrent twin has committed
    if previous is not None:
        return previous
    fields = dict(staff_user_id=staff_user_id, reason=reason, goodwill=goodwill, idempotency_key=idempotency_key)
    if points > 0:
        entry = _credit(s, acc, programme, "adjust", points, as_of, pending=False, **fields)
    else:
        pool = lots(s, customer.id)
        available = sum(lot.remaining for lot in pool if lot.remaining > 0 and lot.valid_on(as_of))
        if -points > available:
            _refuse("points", _l("The balance has only %(n)s points to take.", n=f"{available:,}"),
                    "insufficient_points")
        entry = _post(s, acc, "adjust", points, as_of, **fields)
        _take(s, acc, entry, -points, pool, as_of)
    s.flush()
    return entry


# --- merging two customers' points ------------------------------------------------------------

def _move_lots(s: Session, src: LoyaltyAccount, dst: LoyaltyAccount, key: str, as_of: dt.date,
               staff_user_id: uuid.UUID | None, reason: str) -> int:
    """Move what is left of each of ``src``'s lots to ``dst`` as a lot with the same pending
    and expiry dates (an adjust entry on each side, keyed ``{key}:{lot}:out`` and ``:in``,
    which ``lot_trail`` follows). Returns the points moved."""
    moved = 0
    for lot in lots(s, src.customer_id):
        n = lot.remaining
        if n <= 0:
            continue
        out = _post(s, src, "adjust", -n, as_of, staff_user_id=staff_user_id, reason=reason,
                    detail={"merged_into": str(dst.customer_id)}, idempotency_key=f"{key}:{lot.entry.id}:out")
        _allocate(s, src, out, lot, n)
        _post(s, dst, "adjust", n, as_of, available_on=lot.entry.available_on, expires_on=lot.entry.expires_on,
              staff_user_id=staff_user_id, reason=reason, detail={"merged_from": str(src.customer_id)},
              idempotency_key=f"{key}:{lot.entry.id}:in")
        moved += n
    return moved


def transfer_all(s: Session, programme: Programme, source_id: uuid.UUID, target_id: uuid.UUID,
                 staff_user_id: uuid.UUID | None, as_of: dt.date, reason: str) -> int:
    """Move everything ``source`` has (each lot with what is left of it, keeping its
    pending and expiry dates; and any debt) to ``target``, as adjust entries on both
    sides: the history of both stays as it was. Returns the points moved."""
    first, second = sorted([source_id, target_id])
    accounts = {first: lock_account(s, first), second: lock_account(s, second)}
    src, dst = accounts[source_id], accounts[target_id]
    moved = _move_lots(s, src, dst, f"merge:{source_id}", as_of, staff_user_id, reason)
    owed = debts(s, source_id)
    for debit, left in owed:
        # The source's debt is settled by a credit that the target pays for.
        key = f"merge:{source_id}:{debit.id}"
        paid = _post(s, src, "adjust", left, as_of, available_on=as_of, expires_on=None,
                     staff_user_id=staff_user_id, reason=reason, detail={"merged_into": str(target_id)},
                     idempotency_key=f"{key}:paid")
        s.add(LotAllocation(customer_id=source_id, entry_id=debit.id, lot_id=paid.id, points=left))
        owes = _post(s, dst, "adjust", -left, as_of, staff_user_id=staff_user_id, reason=reason,
                     detail={"merged_from": str(source_id)}, idempotency_key=f"{key}:owes")
        s.flush()
        _take(s, dst, owes, left, lots(s, target_id), as_of)
        moved -= left
    s.flush()
    settle_debts(s, dst, as_of)  # what came in pays what the survivor owed, as far as it goes
    if programme.tier_index(src.tier_code) > programme.tier_index(dst.tier_code):
        _record_change(s, programme, target_id, "merge", as_of,
                       (programme.tier_index(dst.tier_code), dst.tier_since, dst.tier_review_on),
                       (programme.tier_index(src.tier_code), src.tier_since, src.tier_review_on))
        dst.tier_code, dst.tier_since, dst.tier_review_on = src.tier_code, src.tier_since, src.tier_review_on
        dst.updated_at = now_utc()
    s.flush()
    refresh_tier(s, programme, dst, as_of)  # what both earned together may reach a higher tier
    s.flush()
    return moved


# --- expiry and tier reviews (daily jobs) ------------------------------------------------------------

def expire_due(s: Session, as_of: dt.date) -> int:
    """Expire, as ledger entries, what is left of every lot whose expiry day has come.
    Idempotent: a second run finds nothing left to expire."""
    used = (select(func.coalesce(func.sum(LotAllocation.points), 0))
            .where(LotAllocation.lot_id == LedgerEntry.id, LotAllocation.tenant_id == LedgerEntry.tenant_id)
            .scalar_subquery())
    customers = s.scalars(select(LedgerEntry.customer_id).where(
        LedgerEntry.kind.in_(LOT_KINDS), LedgerEntry.points > 0, LedgerEntry.expires_on <= as_of,
        LedgerEntry.points > used).distinct()).all()
    expired = 0
    for customer_id in sorted(customers):
        acc = lock_account(s, customer_id)
        # A lot can expire twice (a void gave back points it had lost before its expiry);
        # what it lost to expiry so far makes each expiry's key unique.
        gone = dict(s.execute(select(LotAllocation.lot_id, func.sum(LotAllocation.points))
                              .join(LedgerEntry, LedgerEntry.id == LotAllocation.entry_id)
                              .where(LotAllocation.customer_id == customer_id, LedgerEntry.kind == "expire")
                              .group_by(LotAllocation.lot_id)).all())
        for lot in lots(s, customer_id):
            if lot.remaining > 0 and not lot.valid_on(as_of):
                entry = _post(s, acc, "expire", -lot.remaining, lot.entry.expires_on, reverses_id=None,
                              detail={"lot": str(lot.entry.id)},
                              idempotency_key=f"expire:{lot.entry.id}:{int(gone.get(lot.entry.id) or 0)}")
                expired += lot.remaining
                _allocate(s, acc, entry, lot, lot.remaining)
        s.flush()
    return expired


def review_tiers(s: Session, programme: Programme, as_of: dt.date) -> int:
    """Apply every tier review due by ``as_of`` (keep, or down one level). Idempotent."""
    due = s.scalars(select(LoyaltyAccount.customer_id).where(LoyaltyAccount.tier_review_on <= as_of)).all()
    changed = 0
    for customer_id in sorted(due):
        acc = lock_account(s, customer_id)
        changed += refresh_tier(s, programme, acc, as_of)
    s.flush()
    return changed


def verify(s: Session) -> list[tuple[uuid.UUID, int, int]]:
    """Accounts of the bound tenant whose cached balance differs from the sum of their
    entries (or entries without an account): (customer id, cached, sum)."""
    sums = dict(s.execute(select(LedgerEntry.customer_id, func.sum(LedgerEntry.points))
                          .group_by(LedgerEntry.customer_id)).all())
    cached = dict(s.execute(select(LoyaltyAccount.customer_id, LoyaltyAccount.balance)).all())
    out = []
    for cid in sorted(set(sums) | set(cached)):
        a, b = int(cached.get(cid, 0)), int(sums.get(cid) or 0)
        if a != b:
            out.append((cid, a, b))
    return out


def lots_by_expiry(pool: list[Lot], as_of: dt.date, days: int = EXPIRY_NOTICE_DAYS) -> list[tuple[dt.date, int]]:
    """Points that will expire within ``days`` after ``as_of``, by expiry day."""
    limit = as_of + dt.timedelta(days=days)
    by_day: dict[dt.date, int] = defaultdict(int)
    for lot in pool:
        e = lot.entry
        if lot.remaining > 0 and e.expires_on is not None and as_of < e.expires_on <= limit:
            by_day[e.expires_on] += lot.remaining
    return sorted(by_day.items())

