"""JSON API for customers and transactions: upsert by ref, read, search, transactions with
an Idempotency-Key (replay, reuse, concurrency), history with totals, tenant isolation
and the OpenAPI document."""
from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal

import pytest
from jsonschema import Draft202012Validator
from sqlalchemy import func, select

from saas import clock
from saas.auth.models import Membership
from saas.customers.models import Customer, IdempotencyRecord, Transaction
from saas.settings import services as settings_services
from saas.settings.models import TransactionKind
from tests.conftest import assert_error

# --- helpers -------------------------------------------------------------------------------

@pytest.fixture
def api_key(tenant_session):
    def factory(tenant, name: str = "PMS") -> str:
        s = tenant_session(tenant)
        _key, full = settings_services.create_api_key(s, name, None)
        s.commit()
        return full

    return factory


@pytest.fixture
def hotel(make_tenant, api_key):
    """A hotel tenant (preset: location main, default kind stay) and its API key."""
    tenant, owner = make_tenant("hotel")
    return tenant, owner, api_key(tenant)


def auth(key: str, idem: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return headers


def rows(app, tenant, model, *where) -> list:
    """The tenant's rows of ``model`` as the database has them now."""
    s = app.extensions["huitou_db"].new_session(read_only=True, tenant_id=tenant.id)
    try:
        return list(s.scalars(select(model).where(*where)))
    finally:
        s.close()


def count(app, tenant, model) -> int:
    s = app.extensions["huitou_db"].new_session(read_only=True, tenant_id=tenant.id)
    try:
        return s.scalar(select(func.count()).select_from(model))
    finally:
        s.close()


def create(client, key, **body):
    body.setdefault("name", "王伟")
    r = client.post("/api/v1/customers", json=body, headers=auth(key))
    assert r.status_code in (200, 201), r.text
    return r.get_json()


TODAY = clock.today("Asia/Shanghai")
YESTERDAY = (TODAY - dt.timedelta(days=1)).isoformat()


def tx_body(**fields) -> dict:
    body = {"customer_ref": "PMS-1", "occurred_on": YESTERDAY, "amount": "1280.50"}
    body.update(fields)
    return body


# --- customers: upsert ---------------------------------------------------------------------

def test_upsert_creates_then_updates_only_the_fields_sent(app, client, hotel):
    tenant, _owner, key = hotel
    r = client.post("/api/v1/customers", headers=auth(key), json={
        "ref": "PMS-1", "name": "王伟", "address_as": "王先生", "phone": "138 1234 5678",
        "email": "Wang@Example.com", "card_number": "VIP-1", "classification": "important",
        "notes": "Prefers a quiet room", "location": "main"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith("/api/v1/customers/PMS-1")
    created = r.get_json()
    assert created["ref"] == "PMS-1" and created["name"] == "王伟" and created["address_as"] == "王先生"
    assert created["phone"].endswith("13812345678")
    assert created["email"] == "wang@example.com"
    assert (created["card_number"], created["classification"], created["location"]) == ("VIP-1", "important", "main")
    assert created["notes"] == "Prefers a quiet room"
    dt.datetime.fromisoformat(created["created_at"])

    (row,) = rows(app, tenant, Customer)
    assert row.external_ref == "PMS-1" and row.name == "王伟"

    # An update with some fields: the others keep their values; "" clears one.
    r = client.post("/api/v1/customers", headers=auth(key),
                    json={"ref": "PMS-1", "phone": "13900001111", "notes": "", "location": None})
    assert r.status_code == 200, r.text
    updated = r.get_json()
    assert updated["phone"].endswith("13900001111")
    assert updated["name"] == "王伟" and updated["email"] == "wang@example.com" and updated["card_number"] == "VIP-1"
    assert updated["notes"] == "" and updated["location"] is None
    assert updated["created_at"] == created["created_at"]
    assert "Location" not in r.headers
    (row,) = rows(app, tenant, Customer)
    assert row.id is not None and row.notes == "" and row.location_id is None and row.classification == "important"


@pytest.mark.parametrize("body,field", [
    ({"name": "No ref"}, "ref"),
    ({"ref": "", "name": "Empty ref"}, "ref"),
    ({"ref": "A/1", "name": "Slash"}, "ref"),
    ({"ref": "R" * 65, "name": "Long ref"}, "ref"),
    ({"ref": "NEW-1"}, "name"),
    ({"ref": "NEW-1", "name": "   "}, "name"),
    ({"ref": "NEW-1", "name": "x" * 121}, "name"),
    ({"ref": "NEW-1", "name": "Bad mail", "email": "not-an-email"}, "email"),
    ({"ref": "NEW-1", "name": "Bad phone", "phone": "call me"}, "phone"),
    ({"ref": "NEW-1", "name": "Bad class", "classification": "vip"}, "classification"),
    ({"ref": "NEW-1", "name": "Where", "location": "no-such-place"}, "location"),
    ({"ref": "NEW-1", "name": "Extra", "colour": "red"}, "colour"),
    ({"ref": "NEW-1", "name": 5}, "name"),
    ({"ref": "NEW-1", "name": "<b>x</b>"}, "name"),
    # Contact details of the existing customer PMS-1.
    ({"ref": "NEW-1", "name": "Same phone", "phone": "13812345678"}, "phone"),
    ({"ref": "NEW-1", "name": "Same mail", "email": "WANG@example.com"}, "email"),
    ({"ref": "NEW-1", "name": "Same card", "card_number": "VIP-1"}, "card_number"),
    ({"ref": "PMS-2", "card_number": "VIP-1"}, "card_number"),  # an update, too
])
def test_upsert_refuses_bad_input_and_writes_nothing(app, client, hotel, body, field):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1", phone="13812345678", email="wang@example.com", card_number="VIP-1")
    create(client, key, ref="PMS-2", name="Li Na")
    before = {(c.external_ref, c.name, c.phone, c.email, c.card_number) for c in rows(app, tenant, Customer)}
    err = assert_error(client.post("/api/v1/customers", json=body, headers=auth(key)), 422, "validation_failed")
    assert field in err["details"], err
    assert all(isinstance(m, str) and m for msgs in err["details"].values() for m in msgs)
    after = {(c.external_ref, c.name, c.phone, c.email, c.card_number) for c in rows(app, tenant, Customer)}
    assert after == before


def test_duplicate_message_names_the_other_customer(client, hotel):
    _tenant, _owner, key = hotel
    create(client, key, ref="PMS-1", name="王伟", phone="13812345678")
    err = assert_error(client.post("/api/v1/customers", headers=auth(key),
                                   json={"ref": "PMS-9", "name": "Other", "phone": "13812345678"}), 422)
    assert err["details"] == {"phone": ["This phone number already belongs to 王伟."]}


def test_inactive_location_is_refused_but_a_customer_keeps_its_own(app, client, hotel, tenant_session):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1", location="main")
    s = tenant_session(tenant)
    main = settings_services.get_entry_by_code(s, "locations", "main")
    main.active = False
    s.commit()
    r = client.post("/api/v1/customers", headers=auth(key), json={"ref": "PMS-1", "name": "Renamed", "location": "main"})
    assert r.status_code == 200, r.text
    assert r.get_json()["location"] == "main"
    err = assert_error(client.post("/api/v1/customers", headers=auth(key),
                                   json={"ref": "PMS-2", "name": "New", "location": "main"}), 422)
    assert list(err["details"]) == ["location"]


def test_update_leaves_unsent_fields_as_stored(app, client, hotel, tenant_session):
    tenant, _owner, key = hotel
    # A customer saved before phone numbers were checked, with details only the app sets.
    s = tenant_session(tenant)
    s.add(Customer(name="Old Guest", external_ref="OLD-1", phone="12345", tags=["vip"], company="ACME"))
    s.commit()
    r = client.post("/api/v1/customers", headers=auth(key), json={"ref": "OLD-1", "address_as": "Mr. Old"})
    assert r.status_code == 200, r.text
    (row,) = rows(app, tenant, Customer)
    assert (row.address_as, row.phone, row.tags, row.company) == ("Mr. Old", "12345", ["vip"], "ACME")


def test_a_merged_ref_leads_to_the_surviving_customer(app, client, hotel, tenant_session):
    tenant, _owner, key = hotel
    create(client, key, ref="OLD-1", name="Wang (duplicate)")
    create(client, key, ref="NEW-1", name="Wang Wei")
    s = tenant_session(tenant)
    old, new = (s.scalar(select(Customer).where(Customer.external_ref == r)) for r in ("OLD-1", "NEW-1"))
    old.merged_into_id = new.id
    s.commit()
    assert client.get("/api/v1/customers/OLD-1", headers=auth(key)).get_json()["ref"] == "NEW-1"
    r = client.post("/api/v1/transactions", json=tx_body(customer_ref="OLD-1"), headers=auth(key, "k"))
    assert r.status_code == 201 and r.get_json()["customer_ref"] == "NEW-1"
    (tx,) = rows(app, tenant, Transaction)
    assert tx.customer_id == new.id
    r = client.post("/api/v1/customers", json={"ref": "OLD-1", "address_as": "王先生"}, headers=auth(key))
    assert r.status_code == 200 and r.get_json()["ref"] == "NEW-1" and r.get_json()["address_as"] == "王先生"
    assert client.get("/api/v1/customers/OLD-1/transactions", headers=auth(key)).get_json()["totals"]["count"] == 1


# --- customers: read and search ------------------------------------------------------------

def test_get_customer_by_ref(client, hotel):
    _tenant, _owner, key = hotel
    created = create(client, key, ref="PMS-1", phone="13812345678")
    r = client.get("/api/v1/customers/PMS-1", headers=auth(key))
    assert r.status_code == 200 and r.get_json() == created
    assert r.headers["Cache-Control"] == "no-store"
    for missing in ("PMS-2", "pms-1", "R" * 300, "a%00b"):
        assert_error(client.get(f"/api/v1/customers/{missing}", headers=auth(key)), 404, "not_found")
        assert_error(client.get(f"/api/v1/customers/{missing}/transactions", headers=auth(key)), 404, "not_found")
    assert_error(client.get("/api/v1/customers/PMS-1"), 401, "unauthorized")


def test_search_matches_like_the_app_and_pages(app, client, hotel, tenant_session):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1", name="王伟", phone="13812345678", card_number="VIP-0001")
    create(client, key, ref="PMS-2", name="王芳", phone="13900001111")
    create(client, key, ref="DMS-77", name="Li Na", phone="18655554444", email="lina@example.com")

    def refs(query, page=None):
        params = {"query": query} | ({"page": page} if page else {})
        r = client.get("/api/v1/customers", query_string=params, headers=auth(key))
        assert r.status_code == 200, r.text
        return r.get_json()

    assert {c["ref"] for c in refs("王")["items"]} == {"PMS-1", "PMS-2"}           # name prefix
    assert [c["ref"] for c in refs("5555")["items"]] == ["DMS-77"]                 # any part of the phone
    assert [c["ref"] for c in refs("VIP-0001")["items"]] == ["PMS-1"]              # card number
    assert [c["ref"] for c in refs("DMS-77")["items"]] == ["DMS-77"]               # ref
    assert refs("nobody")["items"] == [] and refs("nobody")["total"] == 0
    everyone = refs("")
    assert everyone["total"] == 3 and everyone["page"] == 1 and everyone["per_page"] == 50

    # Pages of 50, the page clamped to the last one.
    s = tenant_session(tenant)
    s.add_all([Customer(name=f"Zhang {i:03}", external_ref=f"Z-{i:03}") for i in range(60)])
    s.commit()
    first, second = refs("Zhang"), refs("Zhang", 2)
    assert first["total"] == 60 and len(first["items"]) == 50 and len(second["items"]) == 10
    assert first["items"][0]["ref"] == "Z-000" and second["items"][-1]["ref"] == "Z-059"
    assert refs("Zhang", 99)["page"] == 2
    err = assert_error(client.get("/api/v1/customers?page=two", headers=auth(key)), 422, "validation_failed")
    assert "page" in err["details"]


# --- transactions --------------------------------------------------------------------------

def test_transaction_with_the_default_kind(app, client, hotel):
    tenant, owner, key = hotel
    create(client, key, ref="PMS-1")
    r = client.post("/api/v1/transactions", json=tx_body(), headers=auth(key, "k-1"))
    assert r.status_code == 201, r.text
    body = r.get_json()
    assert body["kind"] == "stay"  # the hotel preset's default kind
    assert body["amount"] == "1280.50" and body["quantity"] == 1 and body["occurred_on"] == YESTERDAY
    assert body["customer_ref"] == "PMS-1" and body["location"] is None and body["external_id"] is None
    (tx,) = rows(app, tenant, Transaction)
    assert str(tx.id) == body["id"] and tx.amount == Decimal("1280.50") and tx.staff_user_id is None

    # Every optional field, a JSON number as the amount.
    r = client.post("/api/v1/transactions", headers=auth(key, "k-2"), json=tx_body(
        amount=99.9, quantity=3, kind="banquet", location="main", department="sales",
        staff_email=owner.email.upper(), external_id="POS-881", note="Wedding tasting"))
    assert r.status_code == 201, r.text
    body = r.get_json()
    assert (body["amount"], body["quantity"], body["kind"], body["location"], body["department"],
            body["external_id"], body["note"]) == ("99.90", 3, "banquet", "main", "sales", "POS-881", "Wedding tasting")
    (tx,) = rows(app, tenant, Transaction, Transaction.external_id == "POS-881")
    assert tx.staff_user_id == owner.id and tx.amount == Decimal("99.90")


@pytest.mark.parametrize("fields,field", [
    ({"customer_ref": "NOBODY"}, "customer_ref"),
    ({"kind": "no-such-kind"}, "kind"),
    ({"kind": "Not A Code"}, "kind"),
    ({"location": "atlantis"}, "location"),
    ({"department": "no-such-dept"}, "department"),
    ({"staff_email": "stranger@example.com"}, "staff_email"),
    ({"staff_email": "inactive"}, "staff_email"),
    ({"staff_email": "other-tenant"}, "staff_email"),
    ({"amount": "-1"}, "amount"),
    ({"amount": "12.345"}, "amount"),
    ({"amount": "lots"}, "amount"),
    ({"amount": -5}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": 10**30}, "amount"),  # more digits than a Decimal quantizes: once a 500
    ({"amount": 1e26}, "amount"),
    ({"amount": "99999999999.00"}, "amount"),
    ({"quantity": 0}, "quantity"),
    ({"occurred_on": "31/03/2026"}, "occurred_on"),
    ({"occurred_on": "2026-02-30"}, "occurred_on"),
    ({"occurred_on": (TODAY + dt.timedelta(days=2)).isoformat()}, "occurred_on"),
    ({"note": "x" * 256}, "note"),
    ({"external_id": "TX-DUP"}, "external_id"),
    ({"amount": None}, "amount"),
    ({"surprise": 1}, "surprise"),
])
def test_transaction_refusals_name_the_field_and_write_nothing(app, client, hotel, make_tenant, add_member,
                                                                tenant_session, fields, field):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1")
    assert client.post("/api/v1/transactions", json=tx_body(external_id="TX-DUP"),
                       headers=auth(key, "first")).status_code == 201
    if fields.get("staff_email") == "inactive":
        user = add_member(tenant, "staff")
        s = tenant_session(tenant)
        s.scalar(select(Membership).where(Membership.user_id == user.id)).active = False
        s.commit()
        fields = {"staff_email": user.email}
    elif fields.get("staff_email") == "other-tenant":
        _other, other_owner = make_tenant()
        fields = {"staff_email": other_owner.email}
    err = assert_error(client.post("/api/v1/transactions", json=tx_body(**fields), headers=auth(key, "second")),
                       422, "validation_failed")
    assert field in err["details"], err
    assert count(app, tenant, Transaction) == 1
    assert [r.key for r in rows(app, tenant, IdempotencyRecord)] == ["first"]


def test_several_unknown_fields_are_named_together(client, hotel):
    _tenant, _owner, key = hotel
    err = assert_error(client.post("/api/v1/transactions", headers=auth(key, "k"), json=tx_body(
        customer_ref="NOBODY", kind="nope", location="nope", department="nope", staff_email="x@example.com",
        amount="-3")), 422)
    assert set(err["details"]) == {"customer_ref", "kind", "location", "department", "staff_email", "amount"}


def test_no_active_kind_means_kind_is_required(client, hotel, tenant_session):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1")
    s = tenant_session(tenant)
    for kind in s.scalars(select(TransactionKind)):
        kind.active = False  # the settings refuse this; data from before they did may have it
    s.commit()
    err = assert_error(client.post("/api/v1/transactions", json=tx_body(), headers=auth(key, "k")), 422)
    assert list(err["details"]) == ["kind"]


# --- idempotency ---------------------------------------------------------------------------

def test_replay_returns_the_first_response_and_creates_one_row(app, client, hotel):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1")
    body = tx_body(external_id="POS-1", amount=12.5)
    first = client.post("/api/v1/transactions", json=body, headers=auth(key, "retry-me"))
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    # The same JSON with its keys in another order is the same request.
    again = client.post("/api/v1/transactions", json=dict(reversed(list(body.items()))),
                        headers=auth(key, "retry-me"))
    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.data == first.data
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(app, tenant, Transaction) == 1
    (record,) = rows(app, tenant, IdempotencyRecord)
    assert (record.key, record.status_code, record.response) == ("retry-me", 201, first.get_json())


def test_same_key_with_another_body_is_409(app, client, hotel):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1")
    assert client.post("/api/v1/transactions", json=tx_body(), headers=auth(key, "k")).status_code == 201
    assert_error(client.post("/api/v1/transactions", json=tx_body(amount="1280.51"), headers=auth(key, "k")),
                 409, "idempotency_key_reused")
    assert count(app, tenant, Transaction) == 1


@pytest.mark.parametrize("idem,code", [
    (None, "idempotency_key_required"),
    ("", "idempotency_key_required"),
    ("   ", "idempotency_key_required"),
    ("k" * 129, "idempotency_key_invalid"),
    ("clé", "idempotency_key_invalid"),
])
def test_missing_or_bad_key_is_400(app, client, hotel, idem, code):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1")
    headers = auth(key, idem)
    assert_error(client.post("/api/v1/transactions", json=tx_body(), headers=headers), 400, code)
    # Also before the body is read: a bad body still gets the 400 for the header.
    assert_error(client.post("/api/v1/transactions", data="nonsense", content_type="text/plain", headers=headers),
                 400, code)
    assert count(app, tenant, Transaction) == 0
    assert count(app, tenant, IdempotencyRecord) == 0


def test_key_of_128_characters_works(client, hotel):
    _tenant, _owner, key = hotel
    create(client, key, ref="PMS-1")
    assert client.post("/api/v1/transactions", json=tx_body(), headers=auth(key, "k" * 128)).status_code == 201


def test_a_refused_request_does_not_use_up_its_key(app, client, hotel):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1")
    assert_error(client.post("/api/v1/transactions", json=tx_body(customer_ref="PMS-2"), headers=auth(key, "k")), 422)
    create(client, key, ref="PMS-2", name="Li Na")
    r = client.post("/api/v1/transactions", json=tx_body(customer_ref="PMS-2"), headers=auth(key, "k"))
    assert r.status_code == 201, r.text
    assert count(app, tenant, Transaction) == 1


def test_keys_are_per_tenant(app, client, make_tenant, api_key):
    a, _ = make_tenant("hotel")
    b, _ = make_tenant("hotel")
    key_a, key_b = api_key(a), api_key(b)
    for key in (key_a, key_b):
        create(client, key, ref="PMS-1")
    ra = client.post("/api/v1/transactions", json=tx_body(), headers=auth(key_a, "shared-key"))
    rb = client.post("/api/v1/transactions", json=tx_body(amount="5.00"), headers=auth(key_b, "shared-key"))
    assert ra.status_code == rb.status_code == 201
    assert ra.get_json()["id"] != rb.get_json()["id"] and rb.get_json()["amount"] == "5.00"
    assert count(app, a, Transaction) == count(app, b, Transaction) == 1


def test_concurrent_requests_with_one_key_create_one_transaction(app, hotel):
    tenant, _owner, key = hotel
    create(app.test_client(), key, ref="PMS-1")
    n = 6
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i):
        c = app.test_client()
        barrier.wait()
        try:
            r = c.post("/api/v1/transactions", json=tx_body(external_id="POS-RACE"), headers=auth(key, "race"))
            results[i] = (r.status_code, r.get_json())
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = ("exception", repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(status == 201 for status, _ in results), results
    assert len({str(body) for _, body in results}) == 1, results
    assert count(app, tenant, Transaction) == 1
    assert count(app, tenant, IdempotencyRecord) == 1


# --- a customer's transactions -------------------------------------------------------------

def test_customer_transactions_newest_first_with_totals(app, client, hotel, tenant_session):
    tenant, _owner, key = hotel
    create(client, key, ref="PMS-1")
    create(client, key, ref="PMS-2", name="Li Na")
    days = [(TODAY - dt.timedelta(days=d)).isoformat() for d in (5, 1, 9)]
    for i, day in enumerate(days):
        r = client.post("/api/v1/transactions", headers=auth(key, f"k{i}"),
                        json=tx_body(occurred_on=day, amount=f"{100 + i}.10"))
        assert r.status_code == 201
    client.post("/api/v1/transactions", json=tx_body(customer_ref="PMS-2"), headers=auth(key, "other"))

    r = client.get("/api/v1/customers/PMS-1/transactions", headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.get_json()
    assert [t["occurred_on"] for t in body["items"]] == sorted(days, reverse=True)
    assert body["totals"] == {"count": 3, "amount": "303.30", "reversed": 0}
    assert (body["page"], body["per_page"], body["total"]) == (1, 50, 3)
    assert all(t["customer_ref"] == "PMS-1" and t["kind"] == "stay" for t in body["items"])

    # Pages of 50; totals always cover all of them.
    s = tenant_session(tenant)
    customer = s.scalar(select(Customer).where(Customer.external_ref == "PMS-1"))
    kind_id = s.scalar(select(Transaction.kind_id))
    s.add_all([Transaction(customer_id=customer.id, kind_id=kind_id, occurred_on=dt.date(2020, 1, 1),
                           amount=Decimal("1.00")) for _ in range(50)])
    s.commit()
    page2 = client.get("/api/v1/customers/PMS-1/transactions?page=2", headers=auth(key)).get_json()
    assert page2["page"] == 2 and len(page2["items"]) == 3 and page2["total"] == 53
    assert page2["totals"] == {"count": 53, "amount": "353.30", "reversed": 0}

    empty = client.get("/api/v1/customers/PMS-2/transactions?page=7", headers=auth(key)).get_json()
    assert empty["page"] == 1 and empty["totals"]["count"] == 1


# --- tenant isolation ----------------------------------------------------------------------

def test_another_tenants_key_cannot_reach_a_customer(app, client, make_tenant, api_key):
    a, _ = make_tenant("hotel")
    b, _ = make_tenant("bank")
    key_a, key_b = api_key(a), api_key(b)
    create(client, key_a, ref="A-1", name="Only A", phone="13812345678", card_number="CARD-A")
    assert client.post("/api/v1/transactions", json=tx_body(customer_ref="A-1"),
                       headers=auth(key_a, "a-1")).status_code == 201

    assert_error(client.get("/api/v1/customers/A-1", headers=auth(key_b)), 404, "not_found")
    assert_error(client.get("/api/v1/customers/A-1/transactions", headers=auth(key_b)), 404, "not_found")
    assert client.get("/api/v1/customers?query=Only", headers=auth(key_b)).get_json()["total"] == 0
    assert client.get("/api/v1/customers?query=A-1", headers=auth(key_b)).get_json()["items"] == []
    err = assert_error(client.post("/api/v1/transactions", json=tx_body(customer_ref="A-1"),
                                   headers=auth(key_b, "b-1")), 422)
    assert "customer_ref" in err["details"]
    # B upserting A's ref and contact details makes B's own customer; A's is untouched.
    r = client.post("/api/v1/customers", headers=auth(key_b),
                    json={"ref": "A-1", "name": "B's customer", "phone": "13812345678", "card_number": "CARD-A"})
    assert r.status_code == 201, r.text
    assert [(c.name, c.card_number) for c in rows(app, a, Customer)] == [("Only A", "CARD-A")]
    assert count(app, a, Transaction) == 1 and count(app, b, Transaction) == 0
    assert client.get("/api/v1/customers/A-1", headers=auth(key_a)).get_json()["name"] == "Only A"


# --- the OpenAPI document ------------------------------------------------------------------

def test_new_paths_are_documented_and_answers_match(app, client, hotel):
    _tenant, _owner, key = hotel
    doc = client.get("/api/v1/openapi.json").get_json()
    paths = doc["paths"]
    assert set(paths["/api/v1/customers"]) == {"get", "post"}
    assert set(paths["/api/v1/customers/{ref}"]) == {"get"}
    assert set(paths["/api/v1/customers/{ref}/transactions"]) == {"get"}
    assert set(paths["/api/v1/transactions"]) == {"post"}
    post_tx = paths["/api/v1/transactions"]["post"]
    (header,) = [p for p in post_tx["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and header["required"] is True
    assert {"400", "401", "415", "422"} <= set(post_tx["responses"])
    assert {p["name"] for p in paths["/api/v1/customers"]["get"]["parameters"]} == {"query", "page"}

    def check(path, method, status, body):
        schema = paths[path][method]["responses"][str(status)]
        if "$ref" in schema:
            schema = doc["components"]["responses"][schema["$ref"].rsplit("/", 1)[1]]
        schema = schema["content"]["application/json"]["schema"]
        Draft202012Validator({**schema, "components": doc["components"]}).validate(body)

    r = client.post("/api/v1/customers", json={"ref": "PMS-1", "name": "王伟", "location": "main"}, headers=auth(key))
    check("/api/v1/customers", "post", 201, r.get_json())
    r = client.post("/api/v1/customers", json={"ref": "PMS-1", "email": "x"}, headers=auth(key))
    check("/api/v1/customers", "post", 422, r.get_json())
    check("/api/v1/customers/{ref}", "get", 200, client.get("/api/v1/customers/PMS-1", headers=auth(key)).get_json())
    check("/api/v1/customers/{ref}", "get", 404, client.get("/api/v1/customers/nope", headers=auth(key)).get_json())
    check("/api/v1/customers", "get", 200, client.get("/api/v1/customers", headers=auth(key)).get_json())
    r = client.post("/api/v1/transactions", json=tx_body(location="main"), headers=auth(key, "k"))
    check("/api/v1/transactions", "post", 201, r.get_json())
    check("/api/v1/transactions", "post", 400,
          client.post("/api/v1/transactions", json=tx_body(), headers=auth(key)).get_json())
    check("/api/v1/customers/{ref}/transactions", "get", 200,
          client.get("/api/v1/customers/PMS-1/transactions", headers=auth(key)).get_json())


def test_jobs_tick_expires_old_idempotency_keys_once(app, make_tenant):
    import datetime as dt

    from sqlalchemy import func, select

    from saas.customers.models import IdempotencyRecord
    from saas.db import bind_tenant

    tenant, _owner = make_tenant()
    s = app.extensions["huitou_db"].new_session()
    bind_tenant(s, tenant.id)
    old = dt.datetime(2026, 10, 1, 12, tzinfo=dt.timezone.utc)
    recent = dt.datetime(2026, 11, 20, 12, tzinfo=dt.timezone.utc)
    s.add_all([IdempotencyRecord(key="old", request_hash="0" * 64, status_code=201, response={}, created_at=old),
               IdempotencyRecord(key="new", request_hash="0" * 64, status_code=201, response={}, created_at=recent)])
    s.commit()
    s.close()
    runner = app.test_cli_runner()
    first = runner.invoke(args=["jobs", "tick", "--as-of", "2026-11-23"])
    assert first.exit_code == 0 and "1 expired idempotency keys deleted" in first.output
    second = runner.invoke(args=["jobs", "tick", "--as-of", "2026-11-23"])
    assert second.exit_code == 0 and "expired idempotency" not in second.output
    s = app.extensions["huitou_db"].new_session(read_only=True)
    bind_tenant(s, tenant.id)
    assert list(s.scalars(select(IdempotencyRecord.key))) == ["new"]
    assert s.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1
    s.close()
