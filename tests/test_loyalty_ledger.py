"""The loyalty ledger: earning, lots, redemption, voids, refunds, expiry, adjustments,
tiers and the database's refusal to change history. Both databases."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError

from saas.auth.models import Role
from saas.customers.models import Customer, Transaction
from saas.errors import ValidationFailed
from saas.loyalty import ledger, services
from saas.loyalty.models import LedgerEntry, LotAllocation, TierChange
from saas.loyalty.programme import Programme
from saas.settings.models import TransactionKind

DAY = dt.date(2026, 3, 10)

TIERS = [
    {"code": "member", "name_zh": "会员", "name_en": "Member", "threshold": 0},
    {"code": "silver", "name_zh": "银卡", "name_en": "Silver", "threshold": 1000, "retention_threshold": 800,
     "multiplier": "1.1"},
    {"code": "gold", "name_zh": "金卡", "name_en": "Gold", "threshold": 5000, "retention_threshold": 4000,
     "multiplier": "1.25"},
]


def programme(**over) -> Programme:
    data = {"points_per_currency_unit": "0.1", "tiers": TIERS, "expiry_months": 24}
    data.update(over)
    return Programme.from_data(data)


@pytest.fixture
def books(hotel, write_session, make_customer):
    """(session, customer, kind) in a hotel tenant; the session is committed by tests."""
    tenant, owner = hotel
    c = make_customer(tenant, name="王伟")
    s = write_session(tenant)
    kind = s.scalar(select(TransactionKind).where(TransactionKind.code == "stay"))
    return s, s.get(Customer, (tenant.id, c.id)), kind, owner


def _tx(s, customer, kind, amount, on=DAY, quantity=1):
    tx = Transaction(customer_id=customer.id, kind_id=kind.id, occurred_on=on, amount=Decimal(amount),
                     quantity=quantity)
    s.add(tx)
    s.flush()
    return tx


def _another(s, name, **fields) -> Customer:
    """Another customer of the tenant (a duplicate, a friend), flushed."""
    c = Customer(name=name, **fields)
    s.add(c)
    s.flush()
    return c


def earn(s, prog, customer, kind, amount, on=DAY, as_of=None):
    tx = _tx(s, customer, kind, amount, on)
    return tx, ledger.award_for_transaction(s, prog, tx, customer, "stay", "", "", None, as_of or on)


def check_books(s, customer_id):
    acc = ledger.account(s, customer_id)
    assert acc.balance == ledger.ledger_sum(s, customer_id)
    remaining = sum(lot.remaining for lot in ledger.lots(s, customer_id))
    owed = sum(left for _, left in ledger.debts(s, customer_id))
    assert remaining - owed == acc.balance
    assert all(lot.remaining >= 0 for lot in ledger.lots(s, customer_id))
    assert remaining == 0 or owed == 0


# --- earning ------------------------------------------------------------------------------------

def test_earning_rounds_down_per_transaction_and_applies_the_tier_multiplier():
    p = programme()
    assert p.earn(Decimal("1280"), 1, "stay", DAY).points == 128
    assert p.earn(Decimal("1289.99"), 1, "stay", DAY).points == 128
    assert p.earn(Decimal("9.99"), 1, "stay", DAY).points == 0
    assert p.earn(Decimal("1280"), 1, "stay", DAY, tier_code="gold").points == 160
    assert p.earn(Decimal("1280"), 1, "stay", DAY, tier_code="silver").points == 140  # 140.8 down


def test_rates_by_kind_and_location_most_specific_wins_and_flat_points():
    p = programme(earn_rates=[{"kind": "stay", "rate": "0.2"}, {"location": "airport", "rate": "0.3"},
                              {"kind": "stay", "location": "airport", "rate": "0.5"}],
                  flat_points=[{"kind": "stay", "per": "unit", "points": 20}, {"kind": "", "per": "visit",
                                                                              "points": 5}],
                  category_multipliers={"food-beverage": "2"})
    assert p.earn(Decimal(100), 1, "banquet", DAY).points == 10 + 5
    assert p.earn(Decimal(100), 3, "stay", DAY).points == 20 + 60 + 5
    assert p.earn(Decimal(100), 1, "banquet", DAY, location="airport").points == 30 + 5
    assert p.earn(Decimal(100), 1, "stay", DAY, location="airport").points == 50 + 20 + 5
    assert p.earn(Decimal(100), 1, "banquet", DAY, department="food-beverage").points == 20 + 5


@pytest.mark.parametrize("on, points", [
    (dt.date(2027, 2, 5), 128),    # the day before
    (dt.date(2027, 2, 6), 256 + 50),  # first day
    (dt.date(2027, 2, 20), 256 + 50),  # last day
    (dt.date(2027, 2, 21), 128),   # the day after
])
def test_promotions_apply_on_their_first_and_last_day(on, points):
    p = programme(promotions=[{"code": "sf", "name_zh": "春节", "name_en": "Spring", "starts_on": "2027-02-06",
                               "ends_on": "2027-02-20", "kinds": ["stay"], "multiplier": "2", "bonus": 50}])
    assert p.earn(Decimal(1280), 1, "stay", on).points == points
    assert p.earn(Decimal(1280), 1, "banquet", on).points == 128


def test_an_award_credits_once_and_caches_the_balance(books):
    s, c, kind, _ = books
    p = programme()
    tx, award = earn(s, p, c, kind, "1280")
    assert award.points == 128 and award.balance == 128 and award.tier_code == "member"
    again = ledger.award_for_transaction(s, p, tx, c, "stay", "", "", None, DAY)
    assert again.points == 0 and again.balance == 128
    s.commit()
    assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 1
    check_books(s, c.id)


def test_birthday_bonus_once_a_year_in_the_birthday_month(books):
    s, c, kind, _ = books
    c.birthday = dt.date(1980, 3, 25)
    p = programme(birthday_bonus=200)
    assert earn(s, p, c, kind, "100")[1].points == 10 + 200
    assert earn(s, p, c, kind, "100")[1].points == 10
    assert earn(s, p, c, kind, "100", on=dt.date(2026, 4, 1))[1].points == 10
    assert earn(s, p, c, kind, "100", on=dt.date(2027, 3, 1), as_of=dt.date(2027, 3, 1))[1].points == 10 + 200


def test_a_bonus_refunded_with_its_transaction_comes_with_the_next_one(books):
    """The birthday bonus and the referral rewards are once only, but a refunded
    transaction takes back the bonus it carried: the next transaction gives it again
    (once: a retry of that award gives nothing more)."""
    s, c, kind, _ = books
    friend = _another(s, name="李娜", birthday=dt.date(1990, 3, 2))
    services.set_referrer(s, friend, c, None)
    p = programme(birthday_bonus=200, referral={"referrer_points": 500, "referred_points": 100})
    first, award = earn(s, p, friend, kind, "100")
    assert award.points == 10 + 200 + 100 and ledger.account(s, c.id).balance == 500
    ledger.reverse_transaction(s, p, first, None, "cancelled", DAY)
    assert (ledger.account(s, friend.id).balance, ledger.account(s, c.id).balance) == (0, 0)
    second, award = earn(s, p, friend, kind, "100")
    assert award.points == 10 + 200 + 100 and ledger.account(s, c.id).balance == 500
    again = ledger.award_for_transaction(s, p, second, friend, "stay", "", "", None, DAY)
    assert again.points == 0 and again.entries == []
    assert earn(s, p, friend, kind, "100")[1].points == 10
    assert services.points_earned_by(s, second) == 310  # the referrer's reward is not the customer's
    for cid in (c.id, friend.id):
        check_books(s, cid)


def test_the_birthday_bonus_a_merged_record_had_this_year_is_not_given_again(books, monkeypatch):
    s, c, kind, owner = books
    p = programme(birthday_bonus=200)
    dup = _another(s, name="dup", birthday=dt.date(1980, 3, 25))
    assert earn(s, p, dup, kind, "100", on=dt.date(2026, 3, 2))[1].points == 210
    s.commit()
    _merge_on(monkeypatch, s, c, dup, owner, dt.date(2026, 3, 3))  # the birthday comes over to c
    assert s.get(Customer, (c.tenant_id, c.id)).birthday == dt.date(1980, 3, 25)
    assert earn(s, p, c, kind, "100", on=dt.date(2026, 3, 20))[1].points == 10
    assert earn(s, p, c, kind, "100", on=dt.date(2027, 3, 1), as_of=dt.date(2027, 3, 1))[1].points == 210


def test_referral_rewards_both_on_the_first_transaction_only(books, make_customer):
    s, c, kind, _ = books
    friend = _another(s, name="李娜")
    services.set_referrer(s, friend, c, None)
    p = programme(referral={"referrer_points": 500, "referred_points": 200})
    assert earn(s, p, friend, kind, "100")[1].points == 10 + 200
    assert ledger.account(s, c.id).balance == 500
    assert earn(s, p, friend, kind, "100")[1].points == 10
    assert ledger.account(s, c.id).balance == 500
    with pytest.raises(ValidationFailed):
        services.set_referrer(s, c, c, None)


def test_a_referrer_whose_reward_reaches_a_threshold_is_upgraded_at_once(books):
    s, c, kind, _ = books
    friend = _another(s, name="李娜")
    services.set_referrer(s, friend, c, None)
    p = programme(referral={"referrer_points": 500, "referred_points": 0})
    earn(s, p, c, kind, "6000")      # the referrer: 600 earned, member
    earn(s, p, friend, kind, "100")  # +500 for the referral: 1,100, silver
    assert ledger.account(s, c.id).tier_code == "silver"
    assert services.summary(s, p, c.id, DAY).tier.code == "silver"


def test_a_referral_is_recorded_only_for_a_customer_without_transactions(books):
    """The rewards come with the referred customer's first transaction: recorded later,
    they would come with any later one (a long-standing customer "referred" at will)."""
    s, c, kind, _ = books
    friend = _another(s, name="李娜")
    p = programme(referral={"referrer_points": 500, "referred_points": 200})
    earn(s, p, friend, kind, "100")
    with pytest.raises(ValidationFailed) as refused:
        services.set_referrer(s, friend, c, None)
    assert "already has transactions" in str(refused.value.errors["referrer"][0])
    assert earn(s, p, friend, kind, "100")[1].points == 10 and ledger.account(s, c.id) is None


def test_the_reward_of_a_referrer_merged_since_goes_to_the_survivor(books):
    s, c, kind, owner = books
    dup, friend = _another(s, name="王伟 (dup)"), _another(s, name="李娜")
    services.set_referrer(s, friend, dup, None)
    s.commit()
    _merge(s, c, dup, owner)
    earn(s, programme(referral={"referrer_points": 500}), friend, kind, "100")
    s.commit()
    assert services.ledger_balance(s, dup.id) == 0
    assert services.ledger_balance(s, c.id) == 500


@pytest.mark.parametrize("measure,threshold", [("spend", 10000), ("visits", 2)])
def test_a_transaction_earns_at_the_tier_held_before_it_new_account_or_not(books, measure, threshold):
    """The purchase that reaches Gold earns at the tier before it, for a first transaction
    as for any other; the upgrade comes after."""
    s, c, kind, _ = books
    tiers = [dict(t) for t in TIERS]
    tiers[1].update(threshold=threshold // 2, retention_threshold=threshold // 2)
    tiers[2].update(threshold=threshold, retention_threshold=threshold)
    p = programme(tier_measure=measure, tiers=tiers)
    other = _another(s, name="other")
    amount = "60000" if measure == "spend" else "1000"
    if measure == "spend":
        earn(s, p, other, kind, "1")  # already a member
        _, existing = earn(s, p, other, kind, amount)
        _, new = earn(s, p, c, kind, amount)  # first transaction ever
        assert existing.tier_code == new.tier_code == "gold"
        assert new.points == existing.points == 6000
    else:
        _, first = earn(s, p, c, kind, amount)  # one visit: silver, earned at member
        assert (first.points, first.tier_code) == (100, "silver")
        _, second = earn(s, p, c, kind, amount)  # two visits: gold, earned at silver
        assert (second.points, second.tier_code) == (110, "gold")


def test_the_anniversary_review_of_a_tier_won_on_29_february_comes_back_to_the_29th():
    p = programme()
    since, day, reviews = dt.date(2024, 2, 29), dt.date(2024, 2, 29), []
    for _ in range(4):
        day = p.next_review(since, after=day)
        reviews.append(day)
    assert reviews == [dt.date(2025, 2, 28), dt.date(2026, 2, 28), dt.date(2027, 2, 28), dt.date(2028, 2, 29)]
    assert p.next_review(since) == dt.date(2025, 2, 28)
    january = programme(tier_review="january")
    assert january.next_review(since, after=dt.date(2025, 1, 1)) == dt.date(2026, 1, 1)


# --- redemption, void, refund -------------------------------------------------------------------------

def test_redemption_consumes_soonest_expiring_lots_and_void_restores_exactly_them(books):
    s, c, kind, _ = books
    p = programme()
    earn(s, p, c, kind, "1000", on=dt.date(2025, 1, 10), as_of=dt.date(2025, 1, 10))  # 100, expires 2027-01-10
    earn(s, p, c, kind, "2000", on=dt.date(2025, 6, 1), as_of=dt.date(2025, 6, 1))    # 200, expires 2027-06-01
    earn(s, p, c, kind, "500", on=DAY)                                                 # 50, expires 2028-03-10
    r = ledger.redeem(s, p, c, DAY, points=250)
    taken = {lot_id: pts for lot_id, pts in s.execute(
        select(LotAllocation.lot_id, LotAllocation.points).where(LotAllocation.entry_id == r.id))}
    by_points = {e.points: e.id for e in s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "earn"))}
    assert taken == {by_points[100]: 100, by_points[200]: 150}
    check_books(s, c.id)
    before = {lot.entry.id: lot.remaining for lot in ledger.lots(s, c.id)}
    v = ledger.void_redemption(s, p, r, None, "guest changed mind", DAY)
    assert v.points == 250
    after = {lot.entry.id: lot.remaining for lot in ledger.lots(s, c.id)}
    assert after == {k: before[k] + taken.get(k, 0) for k in before}
    with pytest.raises(ValidationFailed) as exc:
        ledger.void_redemption(s, p, r, None, "", DAY)
    assert exc.value.code == "already_voided"
    check_books(s, c.id)


def test_redemption_refused_when_short_and_for_pending_points(books):
    s, c, kind, _ = books
    p = programme(pending_days=7)
    earn(s, p, c, kind, "1000")
    with pytest.raises(ValidationFailed) as exc:
        ledger.redeem(s, p, c, DAY, points=100)
    assert exc.value.code == "insufficient_points"
    sm = services.summary(s, p, c.id, DAY)
    assert (sm.pending, sm.pending_from) == (100, DAY + dt.timedelta(days=7))
    ledger.redeem(s, p, c, DAY + dt.timedelta(days=7), points=100)
    assert services.summary(s, p, c.id, DAY + dt.timedelta(days=7)).pending_from is None
    assert ledger.account(s, c.id).balance == 0


def test_refund_after_partial_redemption_goes_negative_and_blocks_redemptions(books):
    s, c, kind, _ = books
    p = programme()
    tx, _ = earn(s, p, c, kind, "1000")  # 100
    ledger.redeem(s, p, c, DAY, points=60)
    ledger.reverse_transaction(s, p, tx, None, "refund", DAY)
    assert ledger.account(s, c.id).balance == -60
    assert s.get(Transaction, (tx.tenant_id, tx.id)).reversed_on == DAY
    summary = services.summary(s, p, c.id, DAY)
    assert summary.owed == 60 and summary.redeemable == 0
    check_books(s, c.id)
    earn(s, p, c, kind, "500")  # 50 pays part of the debt
    assert ledger.account(s, c.id).balance == -10
    with pytest.raises(ValidationFailed) as exc:
        ledger.redeem(s, p, c, DAY, points=1)
    assert exc.value.code == "negative_balance"
    earn(s, p, c, kind, "300")  # 30: debt paid, 20 left
    assert ledger.account(s, c.id).balance == 20
    ledger.redeem(s, p, c, DAY, points=20)
    check_books(s, c.id)
    with pytest.raises(ValidationFailed) as exc:
        ledger.reverse_transaction(s, p, tx, None, "again", DAY)
    assert exc.value.code == "already_reversed"


def test_reward_redemption_uses_stock_and_void_gives_it_back(books):
    s, c, kind, _ = books
    p = programme()
    earn(s, p, c, kind, "10000")  # 1000
    reward = services.save_reward(s, {"code": "spa", "name_zh": "水疗", "name_en": "Spa", "points_cost": "300",
                                      "stock": "1"})
    r = ledger.redeem(s, p, c, DAY, reward=reward)
    assert r.points == -300
    s.refresh(reward)
    assert reward.stock == 0
    with pytest.raises(ValidationFailed) as exc:
        ledger.redeem(s, p, c, DAY, reward=reward)
    assert exc.value.code == "reward_unavailable"
    ledger.void_redemption(s, p, r, None, "", DAY)
    s.refresh(reward)
    assert reward.stock == 1


# --- expiry ---------------------------------------------------------------------------------------------

def test_expiry_job_expires_due_lots_once(books):
    s, c, kind, _ = books
    p = programme(expiry_months=12)
    earn(s, p, c, kind, "1000", on=dt.date(2025, 3, 10), as_of=dt.date(2025, 3, 10))  # expires 2026-03-10
    earn(s, p, c, kind, "500", on=dt.date(2025, 9, 1), as_of=dt.date(2025, 9, 1))     # expires 2026-09-01
    ledger.redeem(s, p, c, dt.date(2025, 10, 1), points=30)
    assert ledger.expire_due(s, dt.date(2026, 3, 9)) == 0
    assert ledger.expire_due(s, DAY) == 70
    assert ledger.expire_due(s, DAY) == 0
    assert ledger.account(s, c.id).balance == 50
    exp = s.scalar(select(LedgerEntry).where(LedgerEntry.kind == "expire"))
    assert exp.occurred_on == dt.date(2026, 3, 10)
    check_books(s, c.id)


def test_expiry_rules():
    assert programme(expiry="never").expires_on(DAY) is None
    assert programme(expiry="end_of_next_year").expires_on(dt.date(2026, 1, 1)) == dt.date(2028, 1, 1)
    assert programme(expiry_months=24).expires_on(dt.date(2024, 2, 29)) == dt.date(2026, 2, 28)


# --- adjustments ----------------------------------------------------------------------------------------

def test_adjustments_need_a_reason_and_stay_within_the_role_limit(books):
    s, c, kind, owner = books
    p = programme(adjust_limits={"staff": 200, "manager": 5000}, goodwill_budget="20", point_value="0.01")
    with pytest.raises(ValidationFailed) as exc:
        ledger.adjust(s, p, c, DAY, points=50, reason=" ", staff_user_id=owner.id, role=Role.staff)
    assert "reason" in exc.value.errors
    with pytest.raises(ValidationFailed) as exc:
        ledger.adjust(s, p, c, DAY, points=201, reason="x", staff_user_id=owner.id, role=Role.staff)
    assert exc.value.code == "over_limit"
    # Both refusals at once: a reason alone would not get it through.
    with pytest.raises(ValidationFailed) as exc:
        ledger.adjust(s, p, c, DAY, points=-201, reason="", staff_user_id=owner.id, role=Role.staff)
    assert set(exc.value.errors) == {"points", "reason"}
    assert "at most 200 points" in str(exc.value.errors["points"][0])
    ledger.adjust(s, p, c, DAY, points=200, reason="x", staff_user_id=owner.id, role=Role.staff)
    ledger.adjust(s, p, c, DAY, points=5000, reason="x", staff_user_id=owner.id, role=Role.manager)
    ledger.adjust(s, p, c, DAY, points=100000, reason="x", staff_user_id=owner.id, role=Role.owner)
    with pytest.raises(ValidationFailed) as exc:
        ledger.adjust(s, p, c, DAY, points=-200000, reason="x", staff_user_id=owner.id, role=Role.owner)
    assert exc.value.code == "insufficient_points"
    # goodwill: budget ¥20 a month = 2,000 points at ¥0.01
    ledger.adjust(s, p, c, DAY, points=150, reason="noisy room", staff_user_id=owner.id, role=Role.staff,
                  goodwill=True)
    ledger.adjust(s, p, c, DAY, points=1850, reason="cold food", staff_user_id=owner.id, role=Role.manager,
                  goodwill=True)
    with pytest.raises(ValidationFailed) as exc:
        ledger.adjust(s, p, c, DAY, points=1, reason="x", staff_user_id=owner.id, role=Role.staff, goodwill=True)
    assert exc.value.code == "over_budget"
    next_month = dt.date(2026, 4, 1)
    ledger.adjust(s, p, c, next_month, points=10, reason="x", staff_user_id=owner.id, role=Role.staff,
                  goodwill=True)
    assert ledger.goodwill_used(s, owner.id, DAY) == 2000
    check_books(s, c.id)


# --- tiers ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("amount, tier", [
    ("9990", "member"), ("10000", "silver"), ("10010", "silver"),
    ("49990", "silver"), ("50000", "gold"), ("50010", "gold"),
])
def test_tier_thresholds_exactly_at_one_below_and_one_above(books, amount, tier):
    s, c, kind, _ = books
    _tx_, award = earn(s, programme(), c, kind, amount)
    assert award.tier_code == tier


def test_tier_is_promoted_on_points_earned_not_on_balance(books):
    s, c, kind, _ = books
    p = programme()
    earn(s, p, c, kind, "6000")  # 600
    ledger.redeem(s, p, c, DAY, points=600)
    _, award = earn(s, p, c, kind, "4000")  # 400 more: earned 1000 in the window, balance 400
    assert award.balance == 400 and award.tier_code == "silver"


def test_downgrade_only_at_review_and_by_one_level(books):
    s, c, kind, _ = books
    p = programme()
    _, award = earn(s, p, c, kind, "50000")  # 5000: gold on DAY, review 2027-03-10
    assert award.tier_code == "gold"
    acc = ledger.account(s, c.id)
    assert acc.tier_review_on == dt.date(2027, 3, 10)
    s.commit()
    assert services.summary(s, p, c.id, dt.date(2027, 3, 9)).tier.code == "gold"
    # First review: the window ending 2027-03-09 starts 2026-03-10 and holds the 5,000: kept.
    assert ledger.review_tiers(s, p, dt.date(2027, 3, 10)) == 1  # the next review date moved
    acc = ledger.account(s, c.id)
    assert (acc.tier_code, acc.tier_review_on) == ("gold", dt.date(2028, 3, 10))
    # Second review: nothing earned in the last 12 months: down one level only, to silver.
    assert services.summary(s, p, c.id, dt.date(2028, 3, 9)).tier.code == "gold"
    ledger.review_tiers(s, p, dt.date(2028, 3, 10))
    acc = ledger.account(s, c.id)
    assert (acc.tier_code, acc.tier_since, acc.tier_review_on) == ("silver", dt.date(2028, 3, 10),
                                                                    dt.date(2029, 3, 10))
    assert ledger.review_tiers(s, p, dt.date(2028, 3, 10)) == 0  # idempotent
    # Reviews skipped by a job that did not run are applied one by one: one level each.
    assert services.summary(s, p, c.id, dt.date(2029, 3, 10)).tier.code == "member"


@pytest.mark.parametrize("amount, kept", [("32000", True), ("31990", False)])
def test_retention_threshold_keeps_the_tier_and_the_summary_explains_it(books, amount, kept):
    s, c, kind, _ = books
    p = programme()
    earn(s, p, c, kind, "50000")  # gold on DAY; retention 4000
    ledger.review_tiers(s, p, dt.date(2027, 3, 10))  # kept: the window still holds DAY
    summary = services.summary(s, p, c.id, dt.date(2027, 3, 10))
    assert (summary.tier.code, summary.keep_by, summary.keep_needed) == ("gold", dt.date(2028, 3, 9), 4000)
    # 32,000 x 0.1 x 1.25 = 4,000 exactly the retention threshold; 31,990 gives 3,998.
    earn(s, p, c, kind, amount, on=dt.date(2027, 6, 1), as_of=dt.date(2027, 6, 1))
    summary = services.summary(s, p, c.id, dt.date(2027, 6, 1))
    assert summary.keep_needed == (0 if kept else 2)
    ledger.review_tiers(s, p, dt.date(2028, 3, 10))
    assert ledger.account(s, c.id).tier_code == ("gold" if kept else "silver")


def _tier(s, customer_id):
    acc = ledger.account(s, customer_id)
    return acc.tier_code, acc.tier_since, acc.tier_review_on


def _changes(s, customer_id):
    rows = s.scalars(select(TierChange).where(TierChange.customer_id == customer_id)
                     .order_by(TierChange.created_at, TierChange.id)).all()
    return [(c.kind, c.from_code, c.to_code) for c in rows]


def test_a_refund_takes_back_the_upgrade_it_carried(books):
    """Buy, be lifted to gold, refund: not gold until the review (the exploit), but the
    tier held before, with its own since and review day."""
    s, c, kind, _ = books
    p = programme()
    earn(s, p, c, kind, "12000", on=dt.date(2026, 1, 5))  # 1,200: silver since 2026-01-05
    before = _tier(s, c.id)
    assert before == ("silver", dt.date(2026, 1, 5), dt.date(2027, 1, 5))
    big, award = earn(s, p, c, kind, "40000")  # 4,400 (x1.1) more: gold on DAY
    assert award.tier_code == "gold"
    ledger.reverse_transaction(s, p, big, None, "returned", dt.date(2026, 3, 20))
    assert _tier(s, c.id) == before
    assert _changes(s, c.id) == [("upgrade", "", "member"), ("upgrade", "member", "silver"),
                                 ("upgrade", "silver", "gold"), ("undo", "gold", "silver")]
    undo = s.scalar(select(TierChange).where(TierChange.kind == "undo"))
    assert (undo.transaction_id, undo.changed_on) == (big.id, dt.date(2026, 3, 20))
    check_books(s, c.id)


def test_a_refund_that_leaves_enough_keeps_the_tier_and_one_short_lowers_it_to_what_remains(books):
    s, c, kind, _ = books
    p = programme()
    small, _ = earn(s, p, c, kind, "500")  # 50 points
    big, award = earn(s, p, c, kind, "50000")  # 5,000 more (silver from the first 1,000): gold
    assert award.tier_code == "gold"
    earn(s, p, c, kind, "49000")  # 4,900 x 1.25 = 6,125 more, still on DAY: gold regardless of big
    ledger.reverse_transaction(s, p, big, None, "", DAY)
    assert ledger.account(s, c.id).tier_code == "gold"  # 50 + 6,125 in the window of the upgrade
    assert [k for k, *_ in _changes(s, c.id)].count("undo") == 0


def test_an_upgrade_short_after_a_refund_stops_at_the_tier_between(books, make_customer, hotel):
    s, c, kind, _ = books
    p = programme()
    # One transaction from nothing to gold (member -> gold in one upgrade); a second of 1,500
    # points on the same day. Refunding the first leaves 1,500 in the window: silver, with the
    # upgrade's day and review day, and no further back.
    big, _ = earn(s, p, c, kind, "50000")
    earn(s, p, c, kind, "12000")  # 1,200 x 1.25 = 1,500
    ledger.reverse_transaction(s, p, big, None, "", dt.date(2026, 4, 1))
    assert _tier(s, c.id) == ("silver", DAY, dt.date(2027, 3, 10))
    assert _changes(s, c.id)[-2:] == [("undo", "gold", "silver"), ("upgrade", "member", "silver")]
    # The stand-in upgrade is itself taken back when what carries it is refunded too.
    second = s.scalars(select(Transaction).where(Transaction.customer_id == c.id,
                                                 Transaction.reversed_on.is_(None))).one()
    ledger.reverse_transaction(s, p, second, None, "", dt.date(2026, 4, 2))
    assert _tier(s, c.id) == ("member", DAY, dt.date(2027, 3, 10))


def test_a_review_that_has_passed_stands_after_a_refund(books):
    s, c, kind, _ = books
    p = programme()
    big, _ = earn(s, p, c, kind, "50000")  # gold on DAY, review 2027-03-10
    ledger.review_tiers(s, p, dt.date(2027, 3, 10))  # kept on the 5,000 of DAY
    ledger.reverse_transaction(s, p, big, None, "", dt.date(2027, 3, 11))
    assert ledger.account(s, c.id).tier_code == "gold"  # lowered by the next review, one level
    ledger.review_tiers(s, p, dt.date(2028, 3, 10))
    assert ledger.account(s, c.id).tier_code == "silver"
    # Each review is in the tier history, the one that kept the tier too.
    assert _changes(s, c.id)[-2:] == [("review", "gold", "gold"), ("review", "gold", "silver")]
    kept = s.scalar(select(TierChange).where(TierChange.kind == "review", TierChange.to_code == "gold"))
    assert (kept.changed_on, kept.from_review_on, kept.to_review_on) == (
        dt.date(2027, 3, 10), dt.date(2027, 3, 10), dt.date(2028, 3, 10))
    assert [row.what for row in services.tier_history(s, c.id)][:2] == ["review", "kept"]  # newest first


@pytest.mark.parametrize("measure, amount", [("spend", "6000"), ("visits", "1")])
def test_a_refund_takes_back_an_upgrade_on_spend_or_visits(books, measure, amount):
    s, c, kind, _ = books
    tiers = [dict(t) for t in TIERS]
    tiers[1]["threshold"], tiers[1]["retention_threshold"] = (10000, 8000) if measure == "spend" else (2, 2)
    tiers[2]["threshold"], tiers[2]["retention_threshold"] = (50000, 40000) if measure == "spend" else (5, 4)
    p = programme(tier_measure=measure, tiers=tiers)
    earn(s, p, c, kind, amount)
    tx, award = earn(s, p, c, kind, amount)
    assert award.tier_code == "silver"
    ledger.reverse_transaction(s, p, tx, None, "", DAY)
    assert ledger.account(s, c.id).tier_code == "member"


def test_calendar_year_window_and_january_review():
    p = programme(evaluation_window="calendar_year", tier_review="january")
    assert p.window(dt.date(2026, 7, 1)) == (dt.date(2026, 1, 1), dt.date(2026, 7, 1))
    assert p.next_review(dt.date(2026, 7, 1)) == dt.date(2027, 1, 1)
    assert programme().window(dt.date(2026, 7, 1)) == (dt.date(2025, 7, 2), dt.date(2026, 7, 1))


# --- the database refuses to change history --------------------------------------------------------------

def test_ledger_rows_cannot_be_updated_or_deleted_even_without_the_orm(app, books):
    s, c, kind, _ = books
    p = programme()
    earn(s, p, c, kind, "1000")
    ledger.redeem(s, p, c, DAY, points=10)
    assert _changes(s, c.id) == [("upgrade", "", "member")]  # a row for the triggers to refuse
    s.commit()
    engine = create_engine(app.config["OWNER_URL"] if app.config["DB_KIND"] == "sqlite" else app.config["DATABASE_URL"])
    try:
        for stmt in ("UPDATE loyalty_entries SET points = points + 1000",
                     "DELETE FROM loyalty_entries",
                     "UPDATE loyalty_allocations SET points = 0",
                     "DELETE FROM loyalty_allocations",
                     "UPDATE loyalty_tier_changes SET to_code = 'gold'",
                     "DELETE FROM loyalty_tier_changes"):
            with engine.connect() as conn:
                with pytest.raises(DBAPIError, match="append-only"):
                    with conn.begin():
                        if conn.dialect.name == "postgresql":
                            conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"),
                                         {"t": str(c.tenant_id)})
                        conn.execute(text(stmt))
    finally:
        engine.dispose()
    assert ledger.ledger_sum(s, c.id) == 90


def test_verify_finds_a_cache_that_differs_from_the_entries(books):
    s, c, kind, _ = books
    earn(s, programme(), c, kind, "1000")
    assert ledger.verify(s) == []
    acc = ledger.account(s, c.id)
    acc.balance += 5
    s.flush()
    assert ledger.verify(s) == [(c.id, 105, 100)]


# --- merging customers moves their points ------------------------------------------------------------------

def test_merge_moves_lots_with_their_dates_and_debt_and_the_higher_tier(books, hotel):
    from saas.customers.records import merge_customers

    s, c, kind, owner = books
    p = programme()
    dup = _another(s, name="王伟 (dup)")
    earn(s, p, dup, kind, "60000", on=dt.date(2025, 6, 1), as_of=dt.date(2025, 6, 1))  # gold tier on dup
    tx, _ = earn(s, p, c, kind, "1000")
    ledger.redeem(s, p, c, DAY, points=100)
    ledger.reverse_transaction(s, p, tx, None, "refund", DAY)  # c owes 100
    s.commit()
    dup_lots = [(lot.remaining, lot.entry.expires_on) for lot in ledger.lots(s, dup.id) if lot.remaining]
    total = ledger.account(s, dup.id).balance + ledger.account(s, c.id).balance
    merge_customers(s, c.id, dup.id, owner.id)
    s.commit()
    assert ledger.account(s, dup.id).balance == 0
    assert ledger.account(s, c.id).balance == total
    assert ledger.account(s, c.id).tier_code == ledger.account(s, dup.id).tier_code == "gold"
    moves = s.scalars(select(LedgerEntry).where(LedgerEntry.idempotency_key.like("merge:%"))).all()
    assert moves and {e.staff_user_id for e in moves} == {owner.id}  # who merged
    change = s.scalar(select(TierChange).where(TierChange.customer_id == c.id, TierChange.kind == "merge"))
    dup_acc = ledger.account(s, dup.id)
    assert (change.from_code, change.to_code, change.to_since, change.to_review_on) == \
        ("member", "gold", dup_acc.tier_since, dup_acc.tier_review_on)
    survivor_lots = [(lot.remaining, lot.entry.expires_on) for lot in ledger.lots(s, c.id) if lot.remaining]
    expires = {e for _, e in dup_lots}
    assert {e for _, e in survivor_lots} == expires  # same expiry dates, debt paid from them
    assert ledger.debts(s, c.id) == []
    for cid in (c.id, dup.id):
        check_books(s, cid)
    assert ledger.verify(s) == []


def test_a_merge_counts_the_points_both_records_earned_towards_the_tier(books):
    """Neither record reached Silver (1,000 points earned); together they do: the merge
    upgrades the survivor, and the points the duplicate earned go on counting (at reviews
    too), though their ledger entries stay the duplicate's."""
    s, c, kind, owner = books
    p = programme()
    dup = _another(s, name="王伟 (dup)")
    earn(s, p, c, kind, "6000")
    dup_tx, _ = earn(s, p, dup, kind, "6000")
    s.commit()
    assert ledger.account(s, c.id).tier_code == ledger.account(s, dup.id).tier_code == "member"
    start, end = p.window(DAY)
    assert ledger.qualifying_value(s, p, c.id, start, end) == 600
    _merge(s, c, dup, owner)
    assert ledger.qualifying_value(s, p, c.id, start, end) == 1200
    acc = ledger.account(s, c.id)
    assert acc.tier_code == "silver"
    last = s.scalars(select(TierChange).where(TierChange.customer_id == c.id)
                     .order_by(TierChange.created_at.desc(), TierChange.id.desc())).first()
    assert (last.kind, last.from_code, last.to_code) == ("upgrade", "member", "silver")
    # Refunded, the duplicate's transaction counts no more, and the upgrade it made possible is taken back.
    ledger.reverse_transaction(s, p, s.get(Transaction, (c.tenant_id, dup_tx.id)), owner.id, "refund", DAY)
    s.commit()
    assert ledger.qualifying_value(s, p, c.id, start, end) == 600
    assert ledger.account(s, c.id).tier_code == "member"
    for cid in (c.id, dup.id):
        check_books(s, cid)


@pytest.mark.parametrize("spent", [0, 150], ids=["unspent", "partly-spent"])
def test_a_transaction_refunded_after_its_customer_was_merged_takes_the_points_from_the_survivor(
        books, spent):
    """The duplicate's transaction moves to the survivor with its lot: refunded later, its
    points come back out of the survivor's account (its own lot first; what the survivor
    spent becomes the survivor's debt), not out of the merged duplicate nobody sees."""
    from saas.customers.records import merge_customers

    s, c, kind, owner = books
    p = programme()
    dup = _another(s, name="王伟 (dup)")
    earn(s, p, c, kind, "500")  # 50 of the survivor's own
    tx, award = earn(s, p, dup, kind, "2000")  # 200 on the duplicate
    s.commit()
    merge_customers(s, c.id, dup.id, owner.id)
    s.commit()
    assert ledger.account(s, c.id).balance == 250
    if spent:
        ledger.redeem(s, p, c, DAY, points=spent)  # the merged lot expires first: it pays
    ledger.reverse_transaction(s, p, s.get(Transaction, (c.tenant_id, tx.id)), owner.id, "refund", DAY)
    s.commit()
    assert ledger.account(s, dup.id).balance == 0
    assert ledger.account(s, c.id).balance == 250 - spent - 200
    assert services.points_earned_by(s, s.get(Transaction, (c.tenant_id, tx.id))) == 200
    for cid in (c.id, dup.id):
        check_books(s, cid)
    assert ledger.verify(s) == []
    # The reversal names the earning it reverses, and a second reversal is refused.
    rev = s.scalar(select(LedgerEntry).where(LedgerEntry.kind == "reverse"))
    assert (rev.customer_id, rev.points, rev.reverses_id) == (c.id, -200, award.entries[0].id)
    with pytest.raises(ValidationFailed):
        ledger.reverse_transaction(s, p, s.get(Transaction, (c.tenant_id, tx.id)), owner.id, "again", DAY)


def _merge(s, survivor, duplicate, owner):
    from saas.customers.records import merge_customers

    merge_customers(s, survivor.id, duplicate.id, owner.id)
    s.commit()


def test_points_merged_into_a_customer_who_owes_more_pay_what_they_can_of_the_debt(books):
    s, c, kind, owner = books
    p = programme()
    tx, _ = earn(s, p, c, kind, "3000")
    ledger.redeem(s, p, c, DAY, points=300)
    ledger.reverse_transaction(s, p, tx, None, "refund", DAY)  # c owes 300
    dup = _another(s, name="王伟 (dup)")
    earn(s, p, dup, kind, "1000")  # 100
    s.commit()
    _merge(s, c, dup, owner)
    assert ledger.account(s, c.id).balance == -200
    assert [left for _, left in ledger.debts(s, c.id)] == [200]  # not a lot of 100 beside a debt of 300
    for cid in (c.id, dup.id):
        check_books(s, cid)


def test_a_redemption_of_the_duplicate_voided_after_the_merge_gives_the_points_to_the_survivor(books):
    s, c, kind, owner = books
    p = programme()
    dup = _another(s, name="王伟 (dup)")
    earn(s, p, c, kind, "500")  # 50
    tx, _ = earn(s, p, dup, kind, "2000", on=DAY - dt.timedelta(days=30))  # 200
    r = ledger.redeem(s, p, dup, DAY, points=150)
    s.commit()
    _merge(s, c, dup, owner)
    assert ledger.account(s, c.id).balance == 100
    void = ledger.void_redemption(s, p, r, owner.id, "returned", DAY)
    s.commit()
    assert void.points == 150
    assert ledger.account(s, dup.id).balance == 0
    assert ledger.account(s, c.id).balance == 250
    # The restored points kept the lot's dates on the survivor.
    lot_expiry = p.expires_on(DAY - dt.timedelta(days=30))
    assert sum(lot.remaining for lot in ledger.lots(s, c.id) if lot.entry.expires_on == lot_expiry) == 200
    for cid in (c.id, dup.id):
        check_books(s, cid)
    assert ledger.verify(s) == []
    with pytest.raises(ValidationFailed):
        ledger.void_redemption(s, p, r, owner.id, "again", DAY)
    # The refund of the duplicate's transaction now takes its 200 from the survivor.
    ledger.reverse_transaction(s, p, s.get(Transaction, (c.tenant_id, tx.id)), owner.id, "refund", DAY)
    s.commit()
    assert (ledger.account(s, c.id).balance, ledger.account(s, dup.id).balance) == (50, 0)
    for cid in (c.id, dup.id):
        check_books(s, cid)


@pytest.mark.parametrize("job_first", [True, False], ids=["expiry-job-first", "refund-first"])
def test_a_refund_after_its_points_expired_takes_back_only_what_is_left_whenever_the_job_ran(books, job_first):
    s, c, kind, _ = books
    p = programme(expiry_months=12)
    tx, _ = earn(s, p, c, kind, "1000", on=dt.date(2025, 3, 10), as_of=dt.date(2025, 3, 10))  # 100, gone 2026-03-10
    earn(s, p, c, kind, "500", on=dt.date(2026, 3, 1), as_of=dt.date(2026, 3, 1))            # 50, its own
    if job_first:
        assert ledger.expire_due(s, DAY) == 100
    ledger.reverse_transaction(s, p, tx, None, "refund", DAY)
    ledger.expire_due(s, DAY)
    s.commit()
    assert ledger.account(s, c.id).balance == 50
    rev = s.scalar(select(LedgerEntry).where(LedgerEntry.kind == "reverse"))
    assert (rev.points, rev.detail) == ((0, {"expired": 100}) if job_first else (-100, {}))
    assert ledger.qualifying_value(s, p, c.id, dt.date(2025, 3, 11), DAY) == 50
    check_books(s, c.id)


def _merge_on(monkeypatch, s, survivor, duplicate, owner, day):
    from saas import clock

    monkeypatch.setattr(clock, "today", lambda tz="UTC": day)
    _merge(s, survivor, duplicate, owner)


def test_a_refund_through_a_chain_of_merges_leaves_out_what_expired_on_the_way(books, monkeypatch):
    """A merged into B, the moved lot expired on B, B merged into C: the refund of A's
    purchase takes nothing more (the points left the books when they expired)."""
    s, c, kind, owner = books
    p = programme(expiry_months=12)
    a, b = _another(s, name="A"), _another(s, name="B")
    tx, _ = earn(s, p, a, kind, "1000", on=dt.date(2025, 3, 10), as_of=dt.date(2025, 3, 10))
    s.commit()
    _merge_on(monkeypatch, s, b, a, owner, dt.date(2025, 6, 1))
    assert ledger.expire_due(s, dt.date(2026, 3, 10)) == 100
    earn(s, p, b, kind, "500", on=dt.date(2026, 3, 1), as_of=dt.date(2026, 3, 1))
    s.commit()
    _merge_on(monkeypatch, s, c, b, owner, DAY)
    ledger.reverse_transaction(s, p, s.get(Transaction, (c.tenant_id, tx.id)), owner.id, "refund", DAY)
    s.commit()
    assert ledger.account(s, c.id).balance == 50
    for cid in (a.id, b.id, c.id):
        check_books(s, cid)


def test_a_refund_after_a_void_moved_on_by_a_merge_then_expired_takes_nothing_twice(books, monkeypatch):
    s, c, kind, owner = books
    p = programme(expiry_months=12)
    dup = _another(s, name="dup")
    tx, _ = earn(s, p, dup, kind, "2000", on=dt.date(2025, 3, 10), as_of=dt.date(2025, 3, 10))  # 200
    r = ledger.redeem(s, p, dup, dt.date(2025, 6, 1), points=200)
    earn(s, p, c, kind, "500", on=dt.date(2026, 3, 1), as_of=dt.date(2026, 3, 1))  # 50
    s.commit()
    _merge_on(monkeypatch, s, c, dup, owner, dt.date(2025, 7, 1))
    ledger.void_redemption(s, p, r, owner.id, "returned", dt.date(2025, 8, 1))  # 200 back, moved on to c
    assert ledger.expire_due(s, dt.date(2026, 3, 10)) == 200
    ledger.reverse_transaction(s, p, s.get(Transaction, (c.tenant_id, tx.id)), owner.id, "refund", DAY)
    s.commit()
    assert ledger.account(s, c.id).balance == 50  # as without the merge
    for cid in (dup.id, c.id):
        check_books(s, cid)


@pytest.mark.parametrize("void_first", [False, True], ids=["refund-first", "void-first"])
def test_a_refund_and_a_void_of_what_its_points_paid_undo_everything_in_either_order(books, void_first):
    """Points earned, spent, then both undone after the lot's expiry day: nothing is owed,
    whichever comes first (a refund first once left a debt no expired lot could pay)."""
    s, c, kind, _ = books
    p = programme(expiry_months=12)
    tx, _ = earn(s, p, c, kind, "1000", on=dt.date(2025, 3, 10), as_of=dt.date(2025, 3, 10))  # gone 2026-03-10
    r = ledger.redeem(s, p, c, dt.date(2025, 6, 1), points=100)
    if void_first:
        ledger.void_redemption(s, p, r, None, "returned", DAY)
        ledger.reverse_transaction(s, p, tx, None, "refund", DAY)
    else:
        ledger.reverse_transaction(s, p, tx, None, "refund", dt.date(2026, 1, 5))
        ledger.void_redemption(s, p, r, None, "returned", DAY)
    ledger.expire_due(s, DAY)
    s.commit()
    assert ledger.account(s, c.id).balance == 0 and ledger.debts(s, c.id) == []
    check_books(s, c.id)


def test_a_refund_takes_back_a_tier_the_survivor_took_over_from_the_record_it_carried(books, monkeypatch):
    s, c, kind, owner = books
    p = programme()
    dup = _another(s, name="dup")
    earn(s, p, c, kind, "100")             # 10: member
    tx, _ = earn(s, p, dup, kind, "12000")  # 1,200: silver on the duplicate
    s.commit()
    _merge_on(monkeypatch, s, c, dup, owner, DAY)
    assert ledger.account(s, c.id).tier_code == "silver"
    ledger.reverse_transaction(s, p, s.get(Transaction, (c.tenant_id, tx.id)), owner.id, "refund", DAY)
    s.commit()
    assert ledger.qualifying_value(s, p, c.id, *p.window(DAY)) == 10
    assert ledger.account(s, c.id).tier_code == "member"
    last = s.scalars(select(TierChange).where(TierChange.customer_id == c.id)
                     .order_by(TierChange.created_at.desc(), TierChange.id.desc())).first()
    assert (last.kind, last.from_code, last.to_code) == ("undo", "silver", "member")


def test_a_void_after_expiry_gives_points_back_to_an_expired_lot_which_expires_again(books):
    s, c, kind, _ = books
    p = programme(expiry_months=12)
    earn(s, p, c, kind, "1000", on=dt.date(2025, 3, 10), as_of=dt.date(2025, 3, 10))  # 100, expires 2026-03-10
    r = ledger.redeem(s, p, c, dt.date(2026, 1, 5), points=50)
    assert ledger.expire_due(s, DAY) == 50
    ledger.void_redemption(s, p, r, None, "", DAY)
    assert ledger.account(s, c.id).balance == 50
    assert ledger.expire_due(s, DAY) == 50  # the restored points belong to an expired lot
    assert ledger.expire_due(s, DAY) == 0
    s.commit()
    keys = s.scalars(select(LedgerEntry.idempotency_key).where(LedgerEntry.kind == "expire")).all()
    assert len(keys) == len(set(keys)) == 2 and all(keys)
    assert ledger.account(s, c.id).balance == 0
    check_books(s, c.id)


def test_a_threshold_above_the_limit_is_named_as_such():
    from saas.loyalty.programme import MAX_THRESHOLD, Programme, ProgrammeError

    tiers = [{"code": "a", "name_zh": "甲", "name_en": "A", "threshold": 0},
             {"code": "b", "name_zh": "乙", "name_en": "B", "threshold": MAX_THRESHOLD + 1}]
    with pytest.raises(ProgrammeError) as exc:
        Programme.from_data({"tiers": tiers})
    assert [str(p) for p in exc.value.problems] == ["Tier 2 threshold must be at most 1,000,000,000,000."]
