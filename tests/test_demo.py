"""``flask demo load``: four demo tenants with logins, customers and history, idempotent."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from saas import demo
from saas.auth.models import Membership, Tenant, User
from saas.customers.models import Customer, Transaction
from saas.db import bind_tenant
from saas.settings.models import TransactionKind
from tests.conftest import empty_database, login

AS_OF = dt.date(2026, 3, 15)
SLUGS = ["demo-bank", "demo-dealership", "demo-hotel", "demo-property"]


@pytest.fixture
def loaded(app):
    lines = list(demo.load_all(app.extensions["huitou_db"], AS_OF))
    return lines


def _all_tenants(app):
    s = app.extensions["huitou_db"].new_session()
    try:
        return {t.slug: t for t in s.scalars(select(Tenant))}
    finally:
        s.close()


def _tenant_counts(app, tenant) -> tuple[int, int, int]:
    s = app.extensions["huitou_db"].new_session()
    try:
        bind_tenant(s, tenant.id)
        count = lambda model: s.scalar(select(func.count()).select_from(model))  # noqa: E731
        return count(Customer), count(Transaction), count(Membership)
    finally:
        s.close()


def test_load_twice_creates_four_tenants_once(app, loaded):
    assert len(loaded) == 4 and all(line.startswith("created demo-") for line in loaded)
    assert "owner@hotel.demo / huitou-demo-2026" in loaded[0]
    tenants = _all_tenants(app)
    assert sorted(tenants) == SLUGS
    assert {t.industry for t in tenants.values()} == {"hotel", "dealership", "property", "bank"}
    before = {slug: _tenant_counts(app, t) for slug, t in tenants.items()}
    for customers, transactions, members in before.values():
        assert 50 <= customers <= 70 and transactions > customers and members == 4

    again = list(demo.load_all(app.extensions["huitou_db"], AS_OF))
    assert again == [f"exists {slug}" for slug in ("demo-hotel", "demo-dealership", "demo-property", "demo-bank")]
    tenants = _all_tenants(app)
    assert sorted(tenants) == SLUGS
    assert {slug: _tenant_counts(app, t) for slug, t in tenants.items()} == before
    s = app.extensions["huitou_db"].new_session()
    try:
        assert s.scalar(select(func.count()).select_from(User)) == 16
    finally:
        s.close()


@pytest.mark.parametrize("email", ["owner@hotel.demo", "manager@dealership.demo", "staff1@property.demo",
                                   "staff2@bank.demo"])
def test_demo_login_works(client, loaded, email):
    r = login(client, email, demo.DEMO_PASSWORD)
    assert r.status_code == 303
    r = client.get("/dashboard")
    assert r.status_code == 200
    r = client.get("/customers")
    # the demo tenants speak Chinese
    assert r.status_code == 200 and 'lang="zh-CN"' in r.text and "60" in r.text


def test_demo_history_is_realistic(app, loaded):
    """Transactions lie before as_of within 18 months, amounts are Decimal and in each
    industry's range, and every tenant has customers who stopped coming 4+ months ago."""
    tenants = _all_tenants(app)
    ranges = {
        "demo-hotel": {"stay": (500, 3000)},
        "demo-dealership": {"service-visit": (300, 5000), "vehicle-sale": (150_000, 400_000)},
        "demo-property": {"management-fee": (100, 20_000)},
        "demo-bank": {"deposit": (1000, 5_000_000), "wealth-product": (10_000, 2_000_000)},
    }
    for slug, tenant in tenants.items():
        s = app.extensions["huitou_db"].new_session()
        try:
            bind_tenant(s, tenant.id)
            kinds = {k.id: k.code for k in s.scalars(select(TransactionKind))}
            txs = list(s.scalars(select(Transaction)))
            assert all(isinstance(t.amount, Decimal) and t.amount >= 0 for t in txs)
            assert all(AS_OF - dt.timedelta(days=550) <= t.occurred_on <= AS_OF for t in txs)
            assert min(t.occurred_on for t in txs) <= AS_OF - dt.timedelta(days=360)
            for code, (low, high) in ranges[slug].items():
                amounts = [t.amount for t in txs if kinds[t.kind_id] == code]
                assert amounts, (slug, code)
                assert all(low <= a <= high for a in amounts), (slug, code, min(amounts), max(amounts))
            last = dict(s.execute(select(Transaction.customer_id, func.max(Transaction.occurred_on))
                                  .group_by(Transaction.customer_id)).all())
            stopped = [c for c, d in last.items() if d < AS_OF - dt.timedelta(days=122)]
            recent = [c for c, d in last.items() if d >= AS_OF - dt.timedelta(days=90)]
            assert len(stopped) >= 5 and len(recent) >= 20, (slug, len(stopped), len(recent))
            customers = list(s.scalars(select(Customer)))
            assert any(c.address_as.endswith("先生") for c in customers)
            assert any(c.address_as.endswith("女士") for c in customers)
            assert any(c.name.isascii() for c in customers)
            business = next(b for b in demo.BUSINESSES if b.slug == slug)
            assert {name for name, _a in business.companies} <= {c.name for c in customers}
            assert len({c.phone for c in customers}) == len(customers)
        finally:
            s.close()


def test_demo_is_deterministic(app, cleanup_engine, loaded):
    """Loading again from scratch gives the same customers and the same sums."""
    def snapshot():
        out = {}
        for slug, tenant in _all_tenants(app).items():
            s = app.extensions["huitou_db"].new_session()
            try:
                bind_tenant(s, tenant.id)
                out[slug] = (sorted(s.scalars(select(Customer.name))),
                             s.scalar(select(func.count()).select_from(Transaction)),
                             sum(s.scalars(select(Transaction.amount)), Decimal(0)))
            finally:
                s.close()
        return out

    first = snapshot()
    with cleanup_engine.begin() as conn:
        empty_database(conn)
    assert _all_tenants(app) == {}
    list(demo.load_all(app.extensions["huitou_db"], AS_OF))
    assert snapshot() == first


def test_owner_with_another_password_is_skipped(app, make_tenant):
    make_tenant("hotel", email="owner@hotel.demo")  # the address taken, with another password
    lines = list(demo.load_all(app.extensions["huitou_db"], AS_OF))
    assert lines[0].startswith("skipped demo-hotel: This email already has an account")
    assert all(line.startswith("created demo-") for line in lines[1:])
    assert "demo-hotel" not in _all_tenants(app)


def test_demo_phones_are_stored_as_e164(app, loaded):
    """The archive stores phones in E.164; the demo data does the same, so the front desk
    finds a demo guest by any part of the number staff type."""
    import re

    for tenant in _all_tenants(app).values():
        s = app.extensions["huitou_db"].new_session(read_only=True)
        try:
            bind_tenant(s, tenant.id)
            phones = [p for p in s.scalars(select(Customer.phone)) if p]
        finally:
            s.close()
        assert phones and all(re.fullmatch(r"\+86[0-9]{9,11}", p) for p in phones), phones[:5]


def test_demo_history_earned_by_the_programme_with_its_department_multipliers(app, loaded):
    """The replayed history earns as recording does: the hotel's food & beverage spend
    with its category multiplier (x1.5), each entry as the programme computes it."""
    from saas.loyalty import services as loyalty
    from saas.loyalty.models import LedgerEntry
    from saas.settings.models import Department

    tenant = _all_tenants(app)["demo-hotel"]
    s = app.extensions["huitou_db"].new_session()
    try:
        bind_tenant(s, tenant.id)
        programme = loyalty.programme_of(s)
        fb = s.scalar(select(Department.id).where(Department.code == "food-beverage"))
        txs = {t.id: t for t in s.scalars(select(Transaction).where(Transaction.department_id == fb))}
        entries = [e for e in s.scalars(select(LedgerEntry).where(LedgerEntry.kind == "earn"))
                   if e.transaction_id in txs and e.reason == ""]
        assert len(entries) >= 10
        for e in entries:
            tx = txs[e.transaction_id]
            assert e.detail.get("category_multiplier") == "1.5", e.detail
            kind, location, department = loyalty._codes(s, tx)
            expected = programme.earn(tx.amount, tx.quantity, kind, tx.occurred_on, location, department,
                                      e.detail.get("tier", "")).points
            assert e.points == expected
    finally:
        s.close()
