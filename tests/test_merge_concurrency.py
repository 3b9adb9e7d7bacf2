"""A merge at the same moment as loyalty writes on the same customers (threads with
separate sessions, the API's own views): nothing lands on the merged record, no point is
lost or made, and two merges of one record cannot both succeed. Both databases."""
from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import select

from saas import clock
from saas.auth.models import Role
from saas.customers.models import Customer, Transaction
from saas.customers.records import merge_customers
from saas.errors import ValidationFailed
from saas.loyalty import ledger
from saas.loyalty import services as loyalty
from saas.loyalty.models import LoyaltyAccount
from saas.settings import services as settings_services
from saas.settings.models import ProgrammeSection

RACES = 5
PROGRAMME = {"points_per_currency_unit": "0.1", "min_redeem_points": 0, "point_value": "0.01",
             "tiers": [{"code": "m", "name_zh": "会员", "name_en": "Member", "threshold": 0}]}


@pytest.fixture
def shop(app, make_tenant):
    tenant, owner = make_tenant("hotel")
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    row = s.scalar(select(ProgrammeSection).where(ProgrammeSection.section == "loyalty"))
    row.data, row.updated_at = PROGRAMME, clock.now_utc()
    key = settings_services.create_api_key(s, "PMS", None)[1]
    s.commit()
    s.close()
    return tenant, owner, key


def _today() -> str:
    return clock.today("Asia/Shanghai").isoformat()


def _post(app, key, path, body):
    r = app.test_client().post(path, json=body, headers={"Authorization": f"Bearer {key}",
                                                          "Idempotency-Key": uuid.uuid4().hex})
    return r.status_code, r.get_json()


def _customer(app, tenant, key, ref):
    """A customer with 100 points."""
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    c = Customer(name=ref, external_ref=ref)
    s.add(c)
    s.commit()
    s.close()
    assert _post(app, key, "/api/v1/transactions", {"customer_ref": ref, "occurred_on": _today(),
                                                   "amount": "1000"})[0] == 201
    return c.id


def _merge(app, tenant, owner, survivor, duplicate, out):
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    try:
        with app.app_context():
            merge_customers(s, survivor, duplicate, owner.id)
            s.commit()
            out.append("ok")
    except ValidationFailed as exc:
        out.append(exc.code)
    finally:
        s.close()


def _race(*fns):
    barrier = threading.Barrier(len(fns))
    threads = [threading.Thread(target=lambda f=f: (barrier.wait(), f())) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def _state(app, tenant, cid):
    """(merged into, balance, has a transaction, ledger.verify)"""
    s = app.extensions["huitou_db"].new_session(read_only=True, tenant_id=tenant.id)
    try:
        return (s.get(Customer, (tenant.id, cid)).merged_into_id,
                s.scalar(select(LoyaltyAccount.balance).where(LoyaltyAccount.customer_id == cid)),
                s.scalar(select(Transaction.id).where(Transaction.customer_id == cid).limit(1)) is not None,
                ledger.verify(s))
    finally:
        s.close()


def test_an_award_for_the_duplicate_while_it_is_merged_lands_on_neither_merged_record(app, shop):
    tenant, owner, key = shop
    for i in range(RACES):
        survivor, dup, out, res = _customer(app, tenant, key, f"S{i}"), _customer(app, tenant, key, f"D{i}"), [], []
        _race(lambda: _merge(app, tenant, owner, survivor, dup, out),
              lambda: res.append(_post(app, key, "/api/v1/transactions",
                                       {"customer_ref": f"D{i}", "occurred_on": _today(), "amount": "100"})))
        assert out == ["ok"] and res[0][0] in (201, 422), res
        if res[0][0] == 422:
            assert res[0][1]["error"]["code"] == "customer_merged"
        assert _state(app, tenant, dup)[1:] == (0, False, []), res
        assert _state(app, tenant, survivor)[1] == 200 + (10 if res[0][0] == 201 else 0)


def test_a_void_of_the_duplicates_redemption_while_it_is_merged_pays_the_survivor(app, shop):
    tenant, owner, key = shop
    for i in range(RACES):
        survivor, dup, out, res = _customer(app, tenant, key, f"S{i}"), _customer(app, tenant, key, f"D{i}"), [], []
        rid = _post(app, key, "/api/v1/redemptions", {"customer_ref": f"D{i}", "points": 60})[1]["id"]
        _race(lambda: _merge(app, tenant, owner, survivor, dup, out),
              lambda: res.append(_post(app, key, f"/api/v1/redemptions/{rid}/void", {})))
        assert out == ["ok"] and res[0][0] == 200, res
        assert (_state(app, tenant, dup)[1], _state(app, tenant, survivor)[1]) == (0, 200)


@pytest.mark.parametrize("second", ["into-another", "the-survivor-away"])
def test_two_merges_of_one_record_at_once_do_not_both_succeed(app, shop, second):
    tenant, owner, key = shop
    for i in range(RACES):
        s_id, d_id, t_id = (_customer(app, tenant, key, f"{n}{i}") for n in "SDT")
        out: list = []
        other = (lambda: _merge(app, tenant, owner, t_id, d_id, out)) if second == "into-another" else \
            (lambda: _merge(app, tenant, owner, t_id, s_id, out))
        _race(lambda: _merge(app, tenant, owner, s_id, d_id, out), other)
        if second == "into-another":
            assert sorted(out) == ["ok", "validation_failed"], out
        else:  # both may succeed one after the other, and then nothing stays on a merged record
            s_into, s_balance, s_has_tx, problems = _state(app, tenant, s_id)
            if out == ["ok", "ok"]:
                assert (s_balance, s_has_tx, _state(app, tenant, d_id)[0]) == (0, False, t_id)
            assert problems == []


def test_an_adjustment_on_a_customer_read_before_a_merge_committed_is_refused(app, shop):
    if app.config["DB_KIND"] != "postgresql":
        pytest.skip("SQLite's write transaction is exclusive from its first read")
    tenant, owner, key = shop
    survivor, dup, out = _customer(app, tenant, key, "S"), _customer(app, tenant, key, "D"), []
    ws = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    try:
        with app.app_context():
            c = ws.get(Customer, (tenant.id, dup))
            _merge(app, tenant, owner, survivor, dup, out)
            with pytest.raises(ValidationFailed) as refused:
                ledger.adjust(ws, loyalty.programme_of(ws), c, clock.today("Asia/Shanghai"), points=50, reason="x",
                              staff_user_id=owner.id, role=Role.owner)
            assert refused.value.code == "customer_merged"
            ws.rollback()
    finally:
        ws.close()
    assert out == ["ok"] and _state(app, tenant, dup)[1] == 0
