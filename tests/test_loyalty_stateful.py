"""Any sequence of earn, redeem, void, reverse, expire, adjust and day changes keeps the
books right: checked against a plain-Python reference of the same rules (lots consumed
soonest-expiring first, debt paid by the next credits, tiers promoted on points earned in
a rolling window and lowered by one level at most per review, an upgrade taken back when
a reversal leaves it short). Both databases."""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import select

from saas.auth.models import Role
from saas.customers.models import Customer, Transaction
from saas.errors import ValidationFailed
from saas.loyalty import ledger
from saas.loyalty.programme import Programme, add_months
from saas.settings.models import TransactionKind

START = dt.date(2026, 1, 1)
PROGRAMME = Programme.from_data({
    "points_per_currency_unit": "0.1", "expiry_months": 6, "pending_days": 3,
    "tiers": [{"code": "member", "name_zh": "会员", "name_en": "Member", "threshold": 0},
              {"code": "silver", "name_zh": "银", "name_en": "Silver", "threshold": 300, "retention_threshold": 200},
              {"code": "gold", "name_zh": "金", "name_en": "Gold", "threshold": 900, "retention_threshold": 700}],
    "adjust_limits": {"staff": 100, "manager": 1000},
})


@dataclass
class RefLot:
    key: object            # the ledger entry id once known
    points: int
    remaining: int
    occurred_on: dt.date
    available_on: dt.date
    expires_on: dt.date
    seq: int
    expired: int = 0       # what the expiry job took from it (gone from the books already)


class Reference:
    """The rules, in plain Python, without the database."""

    def __init__(self):
        self.lots: list[RefLot] = []
        self.debts: list[list] = []   # [seq, left, the lot a refund found spent]
        self.balance = 0
        self.earns: list[list] = []   # [day, points, reversed]
        self.tier, self.review_on = -1, None
        self.upgrades: list[list] = []  # [day, before, after], not undone
        self.seq = 0

    def _order(self):
        return sorted(self.lots, key=lambda lot: (lot.expires_on, lot.occurred_on, lot.seq))

    def _take(self, need, day, pool, redeemable=False, taken=None):
        for lot in pool:
            if need <= 0:
                break
            ok = day < lot.expires_on and (lot.available_on <= day if redeemable else True)
            if lot.remaining <= 0 or not ok:
                continue
            t = min(need, lot.remaining)
            lot.remaining -= t
            need -= t
            if taken is not None:
                taken.append((lot, t))
        return need

    def _settle(self, day):
        for d in self.debts:
            if d[1] > 0:
                d[1] = self._take(d[1], day, self._order())

    def credit(self, points, day, pending=True):
        self.seq += 1
        owed = self.balance < 0
        lot = RefLot(None, points, points, day, day + dt.timedelta(days=PROGRAMME.pending_days if pending else 0),
                     add_months(day, PROGRAMME.expiry_months), self.seq)
        self.lots.append(lot)
        self.balance += points
        if owed:
            self._settle(day)
        return lot

    def owed(self):
        return sum(d[1] for d in self.debts)

    def redeemable(self, day):
        return sum(lot.remaining for lot in self.lots if lot.remaining > 0 and day < lot.expires_on
                   and lot.available_on <= day)

    def redeem(self, points, day):
        if self.balance < 0 or self.owed() or self.redeemable(day) < points:
            return None
        taken = []
        assert self._take(points, day, self._order(), redeemable=True, taken=taken) == 0
        self.balance -= points
        return taken

    def void(self, taken, day):
        owed = self.balance < 0
        for lot, t in taken:
            lot.remaining += t
            self.balance += t
        if owed:
            # A refund's debt is paid first by its own lot, when the void gave it back points.
            for d in self.debts:
                if d[1] > 0:
                    d[1] = self._take(d[1], dt.date.min, [d[2]])
            self._settle(day)

    def reverse(self, lot, day):
        """What the lot earned, less what expired of it (whether the job ran before or after)."""
        self.seq += 1
        points = lot.points - lot.expired
        self.balance -= points
        left = self._take(points, dt.date.min, [lot])
        left = self._take(left, day, self._order())
        if left:
            self.debts.append([self.seq, left, lot])

    def expire(self, day):
        for lot in self.lots:
            if lot.remaining > 0 and lot.expires_on <= day:
                self.balance -= lot.remaining
                lot.expired += lot.remaining
                lot.remaining = 0

    def take_back(self, points, day):
        self.balance -= points
        assert self._take(points, day, self._order()) == 0

    # tiers: points earned (not reversed) in the 12 months ending on a day
    def earned(self, end):
        start = add_months(end, -12) + dt.timedelta(days=1)
        return sum(p for d, p, rev in self.earns if start <= d <= end and not rev)

    @staticmethod
    def reached(v):
        return max([i for i, t in enumerate(PROGRAMME.tiers) if v >= t.threshold], default=-1)

    def tier_on(self, day, upgrades=None):
        """(tier index, review day) on ``day``; an upgrade on the way is appended to
        ``upgrades`` as [day, (index, review) before, (index, review) after]."""
        tiers = PROGRAMME.tiers
        index, review = self.tier, self.review_on
        while index >= 0 and review is not None and review <= day:
            v = self.earned(review - dt.timedelta(days=1))
            if v < tiers[index].retention_threshold:
                index = max(index - 1, self.reached(v))
            review = add_months(review, 12)
        r = self.reached(self.earned(day))
        if r > index:
            if upgrades is not None:
                upgrades.append([day, (index, review), (r, add_months(day, 12))])
            index, review = r, add_months(day, 12)
        return index, review

    def undo_upgrades(self):
        """After a reversal: from the current tier back, each upgrade it came by is judged
        again on the points earned (not reversed) in the window ending on its day; one that
        no longer reaches its tier goes back to what it replaced (or, reaching a tier in
        between, to that one, and no further)."""
        while True:
            up = next((u for u in reversed(self.upgrades) if u[2] == (self.tier, self.review_on)), None)
            if up is None:
                return
            day, before, after = up
            v = self.earned(day)
            if v >= PROGRAMME.tiers[after[0]].threshold:
                return
            self.upgrades.remove(up)
            r = max(before[0], self.reached(v))
            if r > before[0]:
                self.tier = r
                self.upgrades.append([day, before, (r, after[1])])
                return
            self.tier, self.review_on = before


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, session, kind_id):
        super().__init__()
        self.s = session
        self.kind_id = kind_id
        self.customer = Customer(name="Hypothesis")
        self.s.add(self.customer)
        self.s.flush()
        self.day = START
        self.ref = Reference()
        self.txs = []          # (Transaction, RefLot) not reversed
        self.redemptions = []  # (LedgerEntry, taken) not voided

    def _sync_tier(self):
        self.ref.tier, self.ref.review_on = self.ref.tier_on(self.day, self.ref.upgrades)

    @rule(amount=st.integers(0, 6000))
    def earn(self, amount):
        tx = Transaction(customer_id=self.customer.id, kind_id=self.kind_id, occurred_on=self.day,
                         amount=Decimal(amount), quantity=1)
        self.s.add(tx)
        self.s.flush()
        self._sync_tier()
        award = ledger.award_for_transaction(self.s, PROGRAMME, tx, self.customer, "stay", "", "", None, self.day)
        points = math.floor(Decimal(amount) * Decimal("0.1"))
        assert award.points == points
        if points:
            lot = self.ref.credit(points, self.day)
            lot.key = award.entries[0].id
            self.ref.earns.append([self.day, points, False])
            self.txs.append((tx, lot, self.ref.earns[-1]))
        self._sync_tier()

    @rule(points=st.integers(1, 800))
    def redeem(self, points):
        expected = self.ref.redeem(points, self.day)
        try:
            entry = ledger.redeem(self.s, PROGRAMME, self.customer, self.day, points=points)
        except ValidationFailed as exc:
            assert expected is None, exc.errors
            assert exc.code in ("insufficient_points", "negative_balance")
            return
        assert expected is not None, "the ledger let a redemption through that the rules refuse"
        self.redemptions.append((entry, expected))

    @precondition(lambda self: self.redemptions)
    @rule(data=st.data())
    def void(self, data):
        entry, taken = self.redemptions.pop(data.draw(st.integers(0, len(self.redemptions) - 1)))
        ledger.void_redemption(self.s, PROGRAMME, entry, None, "", self.day)
        self.ref.void(taken, self.day)

    @precondition(lambda self: self.txs)
    @rule(data=st.data())
    def reverse(self, data):
        tx, lot, earn_row = self.txs.pop(data.draw(st.integers(0, len(self.txs) - 1)))
        ledger.reverse_transaction(self.s, PROGRAMME, tx, None, "refund", self.day)
        self.ref.reverse(lot, self.day)
        earn_row[2] = True
        # A reversal takes back the upgrades it carried, after any review due by now.
        self._sync_tier()
        self.ref.undo_upgrades()
        self._sync_tier()

    @rule(points=st.integers(-150, 150).filter(bool))
    def adjust(self, points):
        available = sum(lot.remaining for lot in self.ref.lots if lot.remaining > 0 and self.day < lot.expires_on)
        try:
            entry = ledger.adjust(self.s, PROGRAMME, self.customer, self.day, points=points, reason="hypothesis",
                                  staff_user_id=None, role=Role.manager)
        except ValidationFailed as exc:
            assert points < 0 and -points > available and exc.code == "insufficient_points"
            return
        if points > 0:
            lot = self.ref.credit(points, self.day, pending=False)
            lot.key = entry.id
        else:
            assert -points <= available
            self.ref.take_back(-points, self.day)

    @rule(days=st.integers(1, 120))
    def next_days(self, days):
        self.day += dt.timedelta(days=days)

    @rule()
    def expire(self):
        ledger.expire_due(self.s, self.day)
        self.ref.expire(self.day)

    @rule()
    def review(self):
        ledger.review_tiers(self.s, PROGRAMME, self.day)
        self._sync_tier()

    @invariant()
    def books_balance(self):
        cid = self.customer.id
        acc = ledger.account(self.s, cid)
        balance = acc.balance if acc else 0
        assert balance == ledger.ledger_sum(self.s, cid) == self.ref.balance
        lots = {lot.entry.id: lot.remaining for lot in ledger.lots(self.s, cid)}
        assert all(v >= 0 for v in lots.values())
        for ref_lot in self.ref.lots:
            assert lots[ref_lot.key] == ref_lot.remaining, "lots consumed in another order than the rules"
        assert sum(left for _, left in ledger.debts(self.s, cid)) == self.ref.owed()
        if self.ref.owed() == 0:
            assert balance >= 0

    @invariant()
    def tier_matches(self):
        acc = ledger.account(self.s, self.customer.id)
        if acc is None:
            return
        state = ledger._tier_state(self.s, PROGRAMME, self.customer.id, acc, self.day)
        assert state.index == self.ref.tier_on(self.day)[0]


def test_any_sequence_keeps_the_books(hotel, write_session):
    tenant, _owner = hotel
    s = write_session(tenant)
    kind_id = s.scalar(select(TransactionKind.id).where(TransactionKind.code == "stay"))

    class Machine(LedgerMachine):
        def __init__(self):
            super().__init__(s, kind_id)

        def teardown(self):
            s.rollback()

    run_state_machine_as_test(Machine, settings=settings(
        max_examples=30, stateful_step_count=25, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
