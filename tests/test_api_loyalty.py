"""The loyalty API: awards on POST /transactions, reversals, redemptions (points and
rewards), voids, a customer's loyalty summary; refusals with their codes, idempotent
replays, the same key with another body, and the OpenAPI document. Both databases."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import func, select

from saas import clock
from saas.customers.models import Customer, IdempotencyRecord, Transaction
from saas.loyalty import ledger
from saas.loyalty.models import LedgerEntry, LotAllocation, LoyaltyAccount, Reward
from saas.settings import services as settings_services
from saas.settings.models import ProgrammeSection
from tests.conftest import assert_error
from tests.test_api_customers import TODAY, YESTERDAY, auth, create, tx_body

# A plain programme: 1 point per ¥10, flat nothing, two tiers; pending 0, minimum 100.
PROGRAMME = {
    "points_per_currency_unit": "0.1", "min_redeem_points": 100, "point_value": "0.05",
    "expiry": "months", "expiry_months": 24,
    "tiers": [
        {"code": "member", "name_zh": "会员", "name_en": "Member", "threshold": 0},
        {"code": "gold", "name_zh": "金卡", "name_en": "Gold", "threshold": 1000, "retention_threshold": 800,
         "discount_percent": "10", "perks_zh": "欢迎水果", "perks_en": "Welcome fruit"},
    ],
}


@pytest.fixture
def api_key(tenant_session):
    def factory(tenant, name: str = "PMS") -> str:
        s = tenant_session(tenant)
        _key, full = settings_services.create_api_key(s, name, None)
        s.commit()
        return full

    return factory


def set_programme(app, tenant, data: dict) -> None:
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    try:
        row = s.scalar(select(ProgrammeSection).where(ProgrammeSection.section == "loyalty"))
        row.data = data
        row.updated_at = clock.now_utc()
        s.commit()
    finally:
        s.close()


@pytest.fixture
def hotel(app, make_tenant, api_key):
    """A hotel tenant with the plain programme, its key and one customer PMS-1."""
    tenant, owner = make_tenant("hotel")
    set_programme(app, tenant, PROGRAMME)
    key = api_key(tenant)
    create(app.test_client(), key, ref="PMS-1")
    return tenant, owner, key


def read(app, tenant, fn):
    s = app.extensions["huitou_db"].new_session(read_only=True, tenant_id=tenant.id)
    try:
        return fn(s)
    finally:
        s.close()


def count(app, tenant, model, *where) -> int:
    return read(app, tenant, lambda s: s.scalar(select(func.count()).select_from(model).where(*where)))


def books_exact(app, tenant) -> None:
    """Every cached balance equals the sum of the customer's entries."""
    assert read(app, tenant, ledger.verify) == []


def balance_of(app, tenant, ref="PMS-1") -> int:
    def fn(s):
        cid = s.scalar(select(Customer.id).where(Customer.external_ref == ref))
        return ledger.ledger_sum(s, cid)
    return read(app, tenant, fn)


def award(client, key, amount="1000.00", idem=None, **fields) -> dict:
    r = client.post("/api/v1/transactions", json=tx_body(amount=amount, **fields),
                    headers=auth(key, idem or uuid.uuid4().hex))
    assert r.status_code == 201, r.text
    return r.get_json()


def redeem(client, key, idem=None, **body):
    body.setdefault("customer_ref", "PMS-1")
    return client.post("/api/v1/redemptions", json=body, headers=auth(key, idem or uuid.uuid4().hex))


def add_reward(app, tenant, **fields) -> None:
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    try:
        values = {"code": "spa", "name_zh": "水疗", "name_en": "Spa", "points_cost": 150, "stock": None,
                  "location_codes": [], "active": True}
        values.update(fields)
        s.add(Reward(**values))
        s.commit()
    finally:
        s.close()


# --- awards on POST /transactions ----------------------------------------------------------

def test_a_transaction_awards_points_and_answers_balance_and_tier(app, client, hotel):
    tenant, _owner, key = hotel
    body = award(client, key, "1289.99")
    assert (body["points_awarded"], body["balance"], body["tier"]) == (128, 128, "member")
    assert body["amount"] == "1289.99" and body["customer_ref"] == "PMS-1"
    body = award(client, key, "9000.00")
    assert (body["points_awarded"], body["balance"], body["tier"]) == (900, 1028, "gold")
    (earn,) = read(app, tenant, lambda s: s.scalars(select(LedgerEntry).where(
        LedgerEntry.transaction_id == uuid.UUID(body["id"]))).all())
    assert earn.kind == "earn" and earn.points == 900 and earn.staff_user_id is None
    assert earn.occurred_on.isoformat() == YESTERDAY
    books_exact(app, tenant)


def test_an_award_names_the_staff_member_when_the_body_does(app, client, hotel, add_member):
    tenant, _owner, key = hotel
    staff = add_member(tenant, "staff")
    body = award(client, key, staff_email=staff.email.upper())
    entry = read(app, tenant, lambda s: s.scalar(select(LedgerEntry).where(
        LedgerEntry.transaction_id == uuid.UUID(body["id"]))))
    assert entry.staff_user_id == staff.id


def test_a_transaction_replay_answers_the_same_award_and_credits_once(app, client, hotel):
    tenant, _owner, key = hotel
    first = client.post("/api/v1/transactions", json=tx_body(amount="500"), headers=auth(key, "award-1"))
    again = client.post("/api/v1/transactions", json=tx_body(amount="500"), headers=auth(key, "award-1"))
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json() == first.get_json()
    assert first.get_json()["points_awarded"] == 50
    assert count(app, tenant, LedgerEntry) == 1 and balance_of(app, tenant) == 50
    assert_error(client.post("/api/v1/transactions", json=tx_body(amount="501"), headers=auth(key, "award-1")),
                 409, "idempotency_key_reused")
    assert count(app, tenant, Transaction) == 1 and balance_of(app, tenant) == 50


def test_a_refused_transaction_awards_nothing(app, client, hotel):
    tenant, _owner, key = hotel
    assert_error(client.post("/api/v1/transactions", json=tx_body(amount="-5"), headers=auth(key, "k")), 422)
    assert count(app, tenant, LedgerEntry) == 0 and count(app, tenant, LoyaltyAccount) == 0


# --- reversals -------------------------------------------------------------------------------

def test_reverse_takes_back_the_points_and_answers_the_balance(app, client, hotel):
    tenant, _owner, key = hotel
    kept = award(client, key, "300")
    tx = award(client, key, "1000")
    r = client.post(f"/api/v1/transactions/{tx['id']}/reverse", json={"reason": "Refunded"},
                    headers=auth(key, "rev-1"))
    assert r.status_code == 200, r.text
    body = r.get_json()
    assert body["transaction"]["id"] == tx["id"] and body["transaction"]["amount"] == "1000.00"
    assert (body["points_reversed"], body["balance"], body["redeemable"]) == (100, 30, 30)
    assert body["reversed_on"] == TODAY.isoformat() and body["reason"] == "Refunded"
    assert body["customer_ref"] == "PMS-1"
    row = read(app, tenant, lambda s: s.get(Transaction, (tenant.id, uuid.UUID(tx["id"]))))
    assert row.reversed_on == TODAY and row.reverse_reason == "Refunded"
    assert balance_of(app, tenant) == 30
    books_exact(app, tenant)
    # The history still lists the refunded stay; its money no longer counts (as on the guest card).
    history = client.get("/api/v1/customers/PMS-1/transactions", headers=auth(key)).get_json()
    assert history["totals"] == {"count": 2, "amount": "300.00", "reversed": 1}
    assert {t["id"]: t["reversed_on"] for t in history["items"]} == {tx["id"]: TODAY.isoformat(),
                                                                      kept["id"]: None}

    # The replay answers the first 200; another key is refused: already reversed.
    again = client.post(f"/api/v1/transactions/{tx['id']}/reverse", json={"reason": "Refunded"},
                        headers=auth(key, "rev-1"))
    assert again.status_code == 200 and again.get_json() == body
    assert again.headers["Idempotent-Replayed"] == "true"
    err = assert_error(client.post(f"/api/v1/transactions/{tx['id']}/reverse", json={},
                                   headers=auth(key, "rev-2")), 422, "already_reversed")
    assert "already reversed" in err["message"]
    assert_error(client.post(f"/api/v1/transactions/{tx['id']}/reverse", json={"reason": "other"},
                             headers=auth(key, "rev-1")), 409, "idempotency_key_reused")
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "reverse") == 1
    assert balance_of(app, tenant) == 30


def test_reverse_after_the_points_were_spent_leaves_a_debt_and_blocks_redemptions(app, client, hotel):
    tenant, _owner, key = hotel
    tx = award(client, key, "2000")
    assert redeem(client, key, points=150).status_code == 201
    r = client.post(f"/api/v1/transactions/{tx['id']}/reverse", json={}, headers=auth(key, "rev"))
    assert r.status_code == 200, r.text
    assert (r.get_json()["balance"], r.get_json()["redeemable"]) == (-150, 0)
    award(client, key, "1000")  # 100 points pay 100 of the 150 owed
    err = assert_error(redeem(client, key, points=100), 422, "negative_balance")
    assert "owes 50 points" in err["message"] and "points" in err["details"]
    loyalty = client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)).get_json()
    assert (loyalty["balance"], loyalty["owed"], loyalty["redeemable"]) == (-50, 50, 0)
    books_exact(app, tenant)


def test_reverse_refusals(app, client, hotel, make_tenant, api_key):
    tenant, _owner, key = hotel
    tx = award(client, key)
    url = f"/api/v1/transactions/{tx['id']}/reverse"
    # Unknown id, with or without a key; another tenant's id.
    assert_error(client.post(f"/api/v1/transactions/{uuid.uuid4()}/reverse", json={}, headers=auth(key, "x")),
                 404, "not_found")
    assert_error(client.post(f"/api/v1/transactions/{uuid.uuid4()}/reverse", json={}, headers=auth(key)),
                 404, "not_found")
    other, _ = make_tenant("hotel")
    assert_error(client.post(url, json={}, headers=auth(api_key(other), "x")), 404, "not_found")
    assert_error(client.post("/api/v1/transactions/not-a-uuid/reverse", json={}, headers=auth(key, "x")), 404)
    # No key; bad bodies; unknown staff.
    assert_error(client.post(url, json={}, headers=auth(key)), 400, "idempotency_key_required")
    err = assert_error(client.post(url, json={"reason": "x" * 256}, headers=auth(key, "x")), 422,
                       "validation_failed")
    assert list(err["details"]) == ["reason"]
    err = assert_error(client.post(url, json={"colour": "red"}, headers=auth(key, "x")), 422)
    assert list(err["details"]) == ["colour"]
    err = assert_error(client.post(url, json={"staff_email": "nobody@example.com"}, headers=auth(key, "x")), 422)
    assert list(err["details"]) == ["staff_email"]
    assert_error(client.post(url, data="{}", content_type="text/plain", headers=auth(key, "x")), 415)
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "reverse") == 0
    assert count(app, tenant, IdempotencyRecord) == 1  # the award's only
    # The refused requests did not use up the key.
    assert client.post(url, json={}, headers=auth(key, "x")).status_code == 200


# --- redemptions -------------------------------------------------------------------------------

def test_redeem_points_as_payment(app, client, hotel, add_member):
    tenant, _owner, key = hotel
    staff = add_member(tenant, "staff")
    award(client, key, "3000")
    r = redeem(client, key, idem="pay-1", points=120, note="Minibar", location="main", staff_email=staff.email)
    assert r.status_code == 201, r.text
    body = r.get_json()
    assert body["points"] == 120 and body["reward_code"] is None and body["cash_value"] == "6.00"
    assert (body["balance"], body["redeemable"], body["customer_ref"]) == (180, 180, "PMS-1")
    assert body["occurred_on"] == TODAY.isoformat()
    entry = read(app, tenant, lambda s: s.get(LedgerEntry, (tenant.id, uuid.UUID(body["id"]))))
    assert (entry.kind, entry.points, entry.reason, entry.staff_user_id) == ("redeem", -120, "Minibar", staff.id)
    again = redeem(client, key, idem="pay-1", points=120, note="Minibar", location="main", staff_email=staff.email)
    assert again.status_code == 201 and again.get_json() == body and again.headers["Idempotent-Replayed"] == "true"
    assert_error(redeem(client, key, idem="pay-1", points=121), 409, "idempotency_key_reused")
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "redeem") == 1
    assert balance_of(app, tenant) == 180
    books_exact(app, tenant)


def test_redeem_a_reward_of_the_catalogue(app, client, hotel):
    tenant, _owner, key = hotel
    add_reward(app, tenant, stock=1)
    award(client, key, "4000")
    r = redeem(client, key, reward_code="spa")
    assert r.status_code == 201, r.text
    body = r.get_json()
    assert (body["points"], body["reward_code"], body["cash_value"], body["balance"]) == (150, "spa", None, 250)
    assert read(app, tenant, lambda s: s.scalar(select(Reward.stock).where(Reward.code == "spa"))) == 0
    err = assert_error(redeem(client, key, reward_code="spa"), 422, "reward_unavailable")
    assert "reward_code" in err["details"]
    # Voiding gives the stock back.
    assert client.post(f"/api/v1/redemptions/{body['id']}/void", json={}, headers=auth(key, "v")).status_code == 200
    assert read(app, tenant, lambda s: s.scalar(select(Reward.stock).where(Reward.code == "spa"))) == 1
    books_exact(app, tenant)


def test_not_enough_points_is_422_insufficient_points_with_a_clear_message(app, client, hotel):
    tenant, _owner, key = hotel
    award(client, key, "1500")
    err = assert_error(redeem(client, key, points=151), 422, "insufficient_points")
    assert err["message"] == "Not enough points: 150 can be redeemed, 151 are needed."
    assert err["details"] == {"points": [err["message"]]}
    zh = client.post("/api/v1/redemptions", json={"customer_ref": "PMS-1", "points": 151},
                     headers={**auth(key, "zh"), "Accept-Language": "zh-CN"})
    assert zh.status_code == 422 and zh.get_json()["error"]["code"] == "insufficient_points"
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "redeem") == 0
    assert count(app, tenant, IdempotencyRecord) == 1


@pytest.mark.parametrize("body,field,code", [
    ({"customer_ref": "NOPE", "points": 100}, "customer_ref", "validation_failed"),
    ({"reward_code": "no-such-reward"}, "reward_code", "validation_failed"),
    ({"points": 100, "reward_code": "spa"}, "", "validation_failed"),
    ({"note": "nothing to redeem"}, "", "validation_failed"),
    ({"points": 0}, "points", "validation_failed"),
    ({"points": -5}, "points", "validation_failed"),
    ({"points": "100"}, "points", "validation_failed"),
    ({"points": 1.5}, "points", "validation_failed"),
    ({"points": 99}, "points", "below_minimum"),
    ({"points": 100, "location": "nowhere"}, "location", "validation_failed"),
    ({"points": 100, "staff_email": "nobody@example.com"}, "staff_email", "validation_failed"),
    ({"points": 100, "note": "x" * 256}, "note", "validation_failed"),
    ({"points": 100, "colour": "red"}, "colour", "validation_failed"),
    ({"customer_ref": "", "points": 100}, "customer_ref", "validation_failed"),
])
def test_redemption_refusals_name_the_field_and_write_nothing(app, client, hotel, body, field, code):
    tenant, _owner, key = hotel
    add_reward(app, tenant)
    award(client, key, "3000")
    before = count(app, tenant, LedgerEntry)
    err = assert_error(redeem(client, key, **body), 422, code)
    assert field in err["details"], err
    if field == "customer_ref" and body["customer_ref"]:
        assert "NOPE" in err["details"]["customer_ref"][0]
    if field == "reward_code":
        assert "no-such-reward" in err["details"]["reward_code"][0]
    assert count(app, tenant, LedgerEntry) == before
    assert balance_of(app, tenant) == 300


def test_an_inactive_reward_or_one_of_another_location_is_unavailable(app, client, hotel, tenant_session):
    tenant, _owner, key = hotel
    add_reward(app, tenant, code="old", active=False)
    add_reward(app, tenant, code="airport-only", location_codes=["airport"])
    award(client, key, "3000")
    assert_error(redeem(client, key, reward_code="old"), 422, "reward_unavailable")
    assert_error(redeem(client, key, reward_code="airport-only", location="main"), 422, "reward_unavailable")
    assert balance_of(app, tenant) == 300


def test_a_reward_of_some_locations_needs_the_location_named(app, client, hotel):
    tenant, _owner, key = hotel
    add_reward(app, tenant, code="main-only", location_codes=["main"])
    award(client, key, "3000")
    err = assert_error(redeem(client, key, reward_code="main-only"), 422, "reward_unavailable")
    assert "only at main" in err["details"]["location"][0]
    assert balance_of(app, tenant) == 300
    r = redeem(client, key, reward_code="main-only", location="main")
    assert r.status_code == 201, r.text
    assert balance_of(app, tenant) == 150


def test_redemption_keys_and_missing_key(app, client, hotel):
    tenant, _owner, key = hotel
    award(client, key, "3000")
    assert_error(client.post("/api/v1/redemptions", json={"customer_ref": "PMS-1", "points": 100},
                             headers=auth(key)), 400, "idempotency_key_required")
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "redeem") == 0


# --- voids ---------------------------------------------------------------------------------------

def test_void_restores_the_same_lots_and_answers_the_balance(app, client, hotel):
    tenant, _owner, key = hotel
    award(client, key, "1000", occurred_on=(TODAY - dt.timedelta(days=30)).isoformat())
    award(client, key, "1000")
    red = redeem(client, key, points=150).get_json()
    taken = read(app, tenant, lambda s: sorted((a.lot_id, a.points) for a in s.scalars(
        select(LotAllocation).where(LotAllocation.entry_id == uuid.UUID(red["id"])))))
    r = client.post(f"/api/v1/redemptions/{red['id']}/void", json={"reason": "Guest changed mind"},
                    headers=auth(key, "void-1"))
    assert r.status_code == 200, r.text
    body = r.get_json()
    assert body == {"id": red["id"], "customer_ref": "PMS-1", "voided_on": TODAY.isoformat(),
                    "points_restored": 150, "balance": 200, "redeemable": 200}
    void = read(app, tenant, lambda s: s.scalar(select(LedgerEntry).where(LedgerEntry.kind == "void")))
    assert void.reason == "Guest changed mind"
    given = read(app, tenant, lambda s: sorted((a.lot_id, -a.points) for a in s.scalars(
        select(LotAllocation).where(LotAllocation.entry_id == void.id))))
    assert given == taken
    again = client.post(f"/api/v1/redemptions/{red['id']}/void", json={"reason": "Guest changed mind"},
                        headers=auth(key, "void-1"))
    assert again.status_code == 200 and again.get_json() == body and again.headers["Idempotent-Replayed"] == "true"
    err = assert_error(client.post(f"/api/v1/redemptions/{red['id']}/void", json={}, headers=auth(key, "void-2")),
                       422, "already_voided")
    assert err["message"] == "This redemption was already voided."
    assert_error(client.post(f"/api/v1/redemptions/{red['id']}/void", json={}, headers=auth(key, "void-1")),
                 409, "idempotency_key_reused")
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "void") == 1
    assert balance_of(app, tenant) == 200
    books_exact(app, tenant)


def test_a_void_after_a_merge_answers_the_surviving_customer(app, client, hotel):
    """PMS-2 redeemed, then was merged into PMS-1: the void gives the points to PMS-1,
    who holds the rest of PMS-2's points, and says so."""
    from saas.customers.records import merge_customers

    tenant, owner, key = hotel
    create(client, key, ref="PMS-2")
    award(client, key, "2000", customer_ref="PMS-2")
    red = redeem(client, key, customer_ref="PMS-2", points=150).get_json()
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    try:
        ids = dict(s.execute(select(Customer.external_ref, Customer.id)).all())
        merge_customers(s, ids["PMS-1"], ids["PMS-2"], owner.id)
        s.commit()
    finally:
        s.close()
    r = client.post(f"/api/v1/redemptions/{red['id']}/void", json={}, headers=auth(key, "void-merged"))
    assert r.status_code == 200, r.text
    assert r.get_json() == {"id": red["id"], "customer_ref": "PMS-1", "voided_on": TODAY.isoformat(),
                            "points_restored": 150, "balance": 200, "redeemable": 200}
    assert read(app, tenant, lambda s: ledger.ledger_sum(s, ids["PMS-2"])) == 0
    books_exact(app, tenant)


def test_a_redemption_key_used_again_after_it_expired_is_a_new_redemption(app, client, hotel):
    """The API forgets a key after 30 days (expire-idempotency-keys); used again then with
    another body it is a new request: redeemed for the new body, not answered with the old
    entry while nothing is redeemed."""
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-2")
    award(client, key, "5000")
    award(client, key, "5000", customer_ref="PMS-2")
    assert redeem(client, key, idem="K", points=150).status_code == 201
    out = app.test_cli_runner().invoke(args=["jobs", "tick", "--as-of", (TODAY + dt.timedelta(days=31)).isoformat()])
    assert "expired idempotency keys deleted" in out.output
    r = redeem(client, key, idem="K", customer_ref="PMS-2", points=200)
    assert r.status_code == 201 and r.get_json()["points"] == 200 and r.get_json()["customer_ref"] == "PMS-2"
    assert (balance_of(app, tenant, "PMS-1"), balance_of(app, tenant, "PMS-2")) == (350, 300)
    books_exact(app, tenant)


@pytest.mark.parametrize("action", ["reverse", "void"])
def test_a_missing_key_is_answered_before_the_body_is_read_but_after_not_found(app, client, hotel, action):
    tenant, _owner, key = hotel
    tx = award(client, key, "5000")
    url = f"/api/v1/transactions/{tx['id']}/reverse"
    if action == "void":
        url = f"/api/v1/redemptions/{redeem(client, key, points=150).get_json()['id']}/void"
    for sent in ({"data": "{", "content_type": "application/json"}, {"json": {"x": 1}}, {}):
        assert_error(client.post(url, headers=auth(key), **sent), 400, "idempotency_key_required")
    missing = url.replace(tx["id"], str(uuid.uuid4())) if action == "reverse" else \
        f"/api/v1/redemptions/{uuid.uuid4()}/void"
    assert_error(client.post(missing, json={}, headers=auth(key)), 404, "not_found")
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind.in_(["reverse", "void"])) == 0


def test_a_reward_short_of_points_names_the_reward_code(app, client, hotel):
    tenant, _owner, key = hotel
    add_reward(app, tenant, points_cost=5000)
    err = assert_error(redeem(client, key, reward_code="spa"), 422, "insufficient_points")
    assert list(err["details"]) == ["reward_code"]


def test_the_document_names_every_status_the_endpoints_answer(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    for path in ("/api/v1/transactions", "/api/v1/redemptions", "/api/v1/transactions/{transaction_id}/reverse",
                 "/api/v1/redemptions/{redemption_id}/void"):
        assert {"400", "409", "422"} <= set(paths[path]["post"]["responses"]), path
    for path in ("/api/v1/customers/{ref}/loyalty", "/api/v1/customers/{ref}/transactions"):
        assert "422" in paths[path]["get"]["responses"], path


def test_void_refusals(app, client, hotel, make_tenant, api_key):
    tenant, _owner, key = hotel
    tx = award(client, key, "3000")
    red = redeem(client, key, points=100).get_json()
    url = f"/api/v1/redemptions/{red['id']}/void"
    assert_error(client.post(f"/api/v1/redemptions/{uuid.uuid4()}/void", json={}, headers=auth(key, "x")), 404)
    # An earn entry is not a redemption.
    earn_id = read(app, tenant, lambda s: s.scalar(select(LedgerEntry.id).where(
        LedgerEntry.transaction_id == uuid.UUID(tx["id"]))))
    assert_error(client.post(f"/api/v1/redemptions/{earn_id}/void", json={}, headers=auth(key, "x")), 404)
    other, _ = make_tenant("hotel")
    assert_error(client.post(url, json={}, headers=auth(api_key(other), "x")), 404, "not_found")
    assert_error(client.post(url, json={}, headers=auth(key)), 400, "idempotency_key_required")
    err = assert_error(client.post(url, json={"reason": "x" * 256}, headers=auth(key, "x")), 422)
    assert list(err["details"]) == ["reason"]
    err = assert_error(client.post(url, json={"staff_email": "nobody@example.com"}, headers=auth(key, "x")), 422)
    assert list(err["details"]) == ["staff_email"]
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "void") == 0
    assert balance_of(app, tenant) == 200


# --- a customer's loyalty --------------------------------------------------------------------

def test_customer_loyalty_summary(app, client, hotel):
    tenant, _owner, key = hotel
    award(client, key, "12000", occurred_on=TODAY.isoformat())
    r = client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.get_json()
    assert body["as_of"] == TODAY.isoformat() and body["customer_ref"] == "PMS-1"
    assert (body["balance"], body["redeemable"], body["pending"], body["owed"]) == (1200, 1200, 0, 0)
    assert body["pending_from"] is None
    assert body["redeemable_value"] == "60.00"
    assert body["measure"] == "points_earned" and body["qualifying"] == 1200
    tier = body["tier"]
    assert (tier["code"], tier["name_zh"], tier["name_en"], tier["discount_percent"], tier["perks"]) == (
        "gold", "金卡", "Gold", "10", "Welcome fruit")
    assert tier["since"] == TODAY.isoformat()
    review = dt.date.fromisoformat(tier["review_on"])
    assert review.year == TODAY.year + 1
    assert body["next_tier"] is None
    by = (review - dt.timedelta(days=1)).isoformat()
    assert body["retention"] == {"needed": 0, "by": by,
                                 "message": f"Enough to keep Gold at the review on {review.isoformat()}"}
    assert body["expiring"] == []
    assert dt.date.fromisoformat(body["window_start"]) < TODAY

    # A month before the points expire they show as expiring (Gold was kept at the first
    # review: the points were earned in its window).
    expires = read(app, tenant, lambda s: s.scalar(select(LedgerEntry.expires_on)))
    month_before = (expires - dt.timedelta(days=30)).isoformat()
    later = client.get(f"/api/v1/customers/PMS-1/loyalty?as_of={month_before}", headers=auth(key)).get_json()
    assert later["expiring"] == [{"date": expires.isoformat(), "points": 1200}]
    assert later["tier"]["code"] == "gold"
    # At the second review nothing was earned in the window: down one level, Gold next.
    second = dt.date.fromisoformat(later["tier"]["review_on"])
    after = client.get(f"/api/v1/customers/PMS-1/loyalty?as_of={second}", headers=auth(key)).get_json()
    assert after["tier"]["code"] == "member" and after["tier"]["since"] == second.isoformat()
    assert after["next_tier"]["code"] == "gold" and after["next_tier"]["needed"] == 1000
    assert after["next_tier"]["message"] == "Needs 1,000 more points to reach Gold"
    # Nothing was written by reading.
    assert read(app, tenant, lambda s: s.scalar(select(LoyaltyAccount.tier_code))) == "gold"


def test_customer_loyalty_retention_and_next_tier_messages(app, client, hotel):
    tenant, _owner, key = hotel
    body = award(client, key, "1500", occurred_on=TODAY.isoformat())
    assert body["tier"] == "member"
    loyalty = client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)).get_json()
    assert loyalty["next_tier"] == {"code": "gold", "name_zh": "金卡", "name_en": "Gold", "needed": 850,
                                    "message": "Needs 850 more points to reach Gold"}
    assert loyalty["tier"]["code"] == "member" and loyalty["tier"]["perks"] == ""
    assert loyalty["retention"] is None  # the base tier is kept with nothing to earn (as on the card)
    # 900 points from a stay 300 days ago: in the window ending today, not in the window
    # of Gold's first review (a year from today).
    award(client, key, "9000", occurred_on=(TODAY - dt.timedelta(days=300)).isoformat())
    loyalty = client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)).get_json()
    assert loyalty["tier"]["code"] == "gold"
    tx = award(client, key, "100", occurred_on=TODAY.isoformat())
    assert tx["tier"] == "gold"
    loyalty = client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)).get_json()
    assert loyalty["tier"]["code"] == "gold" and loyalty["qualifying"] == 1060
    ret = loyalty["retention"]
    assert ret["needed"] == 640  # 800 - the 160 earned from today on
    assert ret["message"] == f"Needs 640 more points by {ret['by']} to keep Gold"
    zh = client.get("/api/v1/customers/PMS-1/loyalty", headers={**auth(key), "Accept-Language": "zh-CN"})
    assert zh.get_json()["retention"]["needed"] == 640
    # Refunding the stay that carried Gold takes Gold back (not kept until the review).
    txs = read(app, tenant, lambda s: s.scalars(select(Transaction).where(Transaction.amount == 9000)).all())
    r = client.post(f"/api/v1/transactions/{txs[0].id}/reverse", json={}, headers=auth(key, "rev"))
    assert r.status_code == 200, r.text
    loyalty = client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)).get_json()
    assert loyalty["tier"]["code"] == "member" and loyalty["qualifying"] == 160
    assert loyalty["next_tier"]["needed"] == 840


def test_customer_loyalty_for_spend_and_a_customer_without_points(app, client, hotel):
    tenant, _owner, key = hotel
    set_programme(app, tenant, {**PROGRAMME, "tier_measure": "spend"})
    create(client, key, ref="PMS-2", name="Li Na")
    empty = client.get("/api/v1/customers/PMS-2/loyalty", headers=auth(key)).get_json()
    assert (empty["balance"], empty["redeemable"], empty["qualifying"]) == (0, 0, "0.00")
    assert empty["tier"]["code"] == "member" and empty["expiring"] == []
    award(client, key, "250.50")
    body = client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)).get_json()
    assert body["measure"] == "spend" and body["qualifying"] == "250.50"
    assert body["next_tier"]["needed"] == "749.50"
    assert "749.50 more spend to reach Gold" in body["next_tier"]["message"]


@pytest.mark.parametrize("as_of", ["2026-13-01", "yesterday", "0001-01-01", "9999-12-31", "2026-1-1",
                                   "２０２６-01-01", "2026-02-30", "2026-W01-1", "20261231",
                                   (TODAY - dt.timedelta(days=1)).isoformat()])
def test_a_bad_as_of_is_422(client, hotel, as_of):
    _tenant, _owner, key = hotel
    err = assert_error(client.get("/api/v1/customers/PMS-1/loyalty", query_string={"as_of": as_of},
                                  headers=auth(key)), 422, "validation_failed")
    assert list(err["details"]) == ["as_of"]


def test_a_tier_won_by_a_transaction_posted_a_day_late_is_kept_as_if_posted_on_time(app, client, hotel):
    """A PMS posts the stay the day after: the tier dates from the stay, so the review's
    window holds it, as it does for a stay posted the same day."""
    _tenant, _owner, key = hotel
    create(client, key, ref="PMS-2")
    award(client, key, "12000", occurred_on=TODAY.isoformat())
    award(client, key, "12000", customer_ref="PMS-2", occurred_on=YESTERDAY)
    same_day, late = (client.get(f"/api/v1/customers/{ref}/loyalty", headers=auth(key)).get_json()
                      for ref in ("PMS-1", "PMS-2"))
    assert same_day["tier"]["code"] == late["tier"]["code"] == "gold"
    assert late["tier"]["since"] == YESTERDAY and same_day["tier"]["since"] == TODAY.isoformat()
    assert same_day["retention"]["needed"] == late["retention"]["needed"] == 0


def test_a_later_as_of_leaves_out_what_will_have_expired_by_then(app, client, hotel):
    tenant, _owner, key = hotel
    award(client, key, "1000", occurred_on=TODAY.isoformat())  # 100
    expires = read(app, tenant, lambda s: s.scalar(select(LedgerEntry.expires_on)))
    before = client.get(f"/api/v1/customers/PMS-1/loyalty?as_of={expires - dt.timedelta(days=1)}",
                        headers=auth(key)).get_json()
    assert (before["balance"], before["redeemable"]) == (100, 100)
    after = client.get(f"/api/v1/customers/PMS-1/loyalty?as_of={expires}", headers=auth(key)).get_json()
    assert (after["balance"], after["redeemable"], after["pending"], after["owed"]) == (0, 0, 0, 0)
    assert balance_of(app, tenant) == 100  # reading wrote nothing


def test_a_past_as_of_is_422_with_what_to_send_instead(client, hotel):
    """The figures look ahead from the books as they stand: a past day is not reconstructed
    (it would answer today's balance and a tier since a later day)."""
    _tenant, _owner, key = hotel
    award(client, key, "12000")
    r = client.get("/api/v1/customers/PMS-1/loyalty", query_string={"as_of": "2020-01-01"}, headers=auth(key))
    err = assert_error(r, 422, "validation_failed")
    assert err["details"]["as_of"] == [f"Enter today ({TODAY.isoformat()}) or a later day: the figures look ahead "
                                       "from the points as they stand now. The member statement shows a past period."]
    assert client.get("/api/v1/customers/PMS-1/loyalty", query_string={"as_of": TODAY.isoformat()},
                      headers=auth(key)).status_code == 200


def test_customer_loyalty_of_an_unknown_or_foreign_customer_is_404(client, hotel, make_tenant, api_key):
    _tenant, _owner, key = hotel
    assert_error(client.get("/api/v1/customers/NOPE/loyalty", headers=auth(key)), 404, "not_found")
    other, _ = make_tenant("hotel")
    assert_error(client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(api_key(other))), 404, "not_found")
    assert_error(client.get("/api/v1/customers/PMS-1/loyalty"), 401)


# --- the OpenAPI document ------------------------------------------------------------------

def test_the_loyalty_endpoints_are_documented_and_answers_match(app, client, hotel):
    tenant, _owner, key = hotel
    doc = client.get("/api/v1/openapi.json").get_json()
    paths = doc["paths"]
    assert set(paths["/api/v1/transactions/{transaction_id}/reverse"]) == {"post"}
    assert set(paths["/api/v1/redemptions"]) == {"post"}
    assert set(paths["/api/v1/redemptions/{redemption_id}/void"]) == {"post"}
    assert set(paths["/api/v1/customers/{ref}/loyalty"]) == {"get"}
    for path in ("/api/v1/transactions/{transaction_id}/reverse", "/api/v1/redemptions",
                 "/api/v1/redemptions/{redemption_id}/void"):
        op = paths[path]["post"]
        assert "requestBody" in op and {"400", "401", "422"} <= set(op["responses"])
        assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" and p["required"] for p in op["parameters"])
    assert {p["name"] for p in paths["/api/v1/customers/{ref}/loyalty"]["get"]["parameters"]} == {"ref", "as_of"}

    def check(path, method, status, r):
        assert r.status_code == status, r.text
        schema = paths[path][method]["responses"][str(status)]
        if "$ref" in schema:
            schema = doc["components"]["responses"][schema["$ref"].rsplit("/", 1)[1]]
        schema = schema["content"]["application/json"]["schema"]
        Draft202012Validator({**schema, "components": doc["components"]}).validate(r.get_json())

    add_reward(app, tenant)
    r = client.post("/api/v1/transactions", json=tx_body(amount="3000"), headers=auth(key, "t1"))
    check("/api/v1/transactions", "post", 201, r)
    tx = r.get_json()
    check("/api/v1/redemptions", "post", 201, redeem(client, key, points=100))
    red = redeem(client, key, reward_code="spa")
    check("/api/v1/redemptions", "post", 201, red)
    check("/api/v1/redemptions", "post", 422, redeem(client, key, points=10_000))
    check("/api/v1/redemptions/{redemption_id}/void", "post", 200,
          client.post(f"/api/v1/redemptions/{red.get_json()['id']}/void", json={}, headers=auth(key, "v")))
    check("/api/v1/customers/{ref}/loyalty", "get", 200,
          client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)))
    check("/api/v1/transactions/{transaction_id}/reverse", "post", 200,
          client.post(f"/api/v1/transactions/{tx['id']}/reverse", json={}, headers=auth(key, "r")))
    check("/api/v1/customers/{ref}/loyalty", "get", 200,
          client.get("/api/v1/customers/PMS-1/loyalty", headers=auth(key)))
    check("/api/v1/transactions/{transaction_id}/reverse", "post", 404,
          client.post(f"/api/v1/transactions/{uuid.uuid4()}/reverse", json={}, headers=auth(key, "r2")))


def test_openapi_document_is_valid(client):
    from openapi_spec_validator import validate

    validate(client.get("/api/v1/openapi.json").get_json())
