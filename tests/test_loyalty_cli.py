"""`flask loyalty verify`: cache == sum of the ledger for every customer of every tenant."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from saas.customers.models import Customer, Transaction
from saas.loyalty import services
from saas.loyalty.models import LoyaltyAccount
from saas.settings.models import TransactionKind


def _award(app, tenant, ref: str, amount: str) -> Customer:
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    try:
        c = Customer(name=ref, external_ref=ref)
        s.add(c)
        s.flush()
        kind = s.scalar(select(TransactionKind).where(TransactionKind.is_default.is_(True)))
        tx = Transaction(customer_id=c.id, kind_id=kind.id, occurred_on=dt.date(2026, 3, 1), amount=Decimal(amount))
        s.add(tx)
        s.flush()
        services.award(s, tx, c, None, dt.date(2026, 3, 1))
        s.commit()
        return c
    finally:
        s.close()


def test_verify_passes_on_exact_books_and_lists_a_mismatch(app, make_tenant):
    runner = app.test_cli_runner()
    empty = runner.invoke(args=["loyalty", "verify"])
    assert empty.exit_code == 0, empty.output
    assert "ok: 0 accounts in 0 tenants" in empty.output

    a, _ = make_tenant("hotel", name="Harbour Hotel")
    b, _ = make_tenant("bank", name="River Bank")
    _award(app, a, "A-1", "1280")
    wrong = _award(app, b, "B-1", "5000")
    _award(app, b, "B-2", "300")
    result = runner.invoke(args=["loyalty", "verify"])
    assert result.exit_code == 0, result.output
    assert "ok: 3 accounts in 2 tenants" in result.output

    # A cached balance that no longer equals its entries (the ledger itself cannot be edited).
    s = app.extensions["huitou_db"].new_session(tenant_id=b.id)
    acc = s.scalar(select(LoyaltyAccount).where(LoyaltyAccount.customer_id == wrong.id))
    right = acc.balance
    acc.balance += 7
    s.commit()
    s.close()
    result = runner.invoke(args=["loyalty", "verify"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert result.stdout.splitlines() == [
        f"mismatch: tenant {b.slug} customer {wrong.id} (ref B-1): cached balance {right + 7}, sum of entries {right}"]
    assert "1 mismatched balances in 2 tenants" in result.stderr
