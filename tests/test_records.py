"""Merging duplicate customers, reassigning a departed member's customers, exporting and
erasing a customer's personal data, the customer's audit log, and the tenant wall on
each of these routes."""
from __future__ import annotations

import datetime as dt
import html
import json
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from saas.auth.models import Membership
from saas.customers import records
from saas.customers.models import AuditEntry, ContactLog, Customer, CustomerContact, Preference, Transaction
from saas.errors import NotFound, ValidationFailed
from saas.settings.models import TransactionKind
from tests.conftest import csrf_from, login

NOW = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.timezone.utc)


@pytest.fixture
def add_history(write_session):
    """add_history(tenant, customer, amounts=(...)) adds transactions, a preference, a
    contact log entry and a decision maker to the customer."""
    def factory(tenant, customer, amounts=("100.00",), tag="x", user_id=None):
        s = write_session(tenant)
        kind = s.scalar(select(TransactionKind).where(TransactionKind.is_default.is_(True)))
        for i, amount in enumerate(amounts):
            s.add(Transaction(customer_id=customer.id, kind_id=kind.id, occurred_on=dt.date(2025, 1, 1 + i),
                              amount=Decimal(amount), note=f"note {tag} {i}"))
        s.add(Preference(customer_id=customer.id, category="room", key=f"pillow {tag}", value="firm",
                         recorded_by_id=user_id))
        s.add(ContactLog(customer_id=customer.id, channel="call", occurred_at=NOW,
                         outcome=f"outcome {tag}", next_step=f"next {tag}", staff_user_id=user_id))
        s.add(CustomerContact(customer_id=customer.id, name=f"Buyer {tag}", role="采购经理", phone="13900000000"))
        s.commit()
    return factory


@pytest.fixture
def check(tenant_session):
    """check(tenant) -> a fresh read session (sees everything committed so far)."""
    return tenant_session


def _count(s, model, *where):
    return s.scalar(select(func.count()).select_from(model).where(*where))


def _audit(s, action=None):
    q = select(AuditEntry).order_by(AuditEntry.created_at, AuditEntry.id)
    if action:
        q = q.where(AuditEntry.action == action)
    return list(s.scalars(q))


# --- merge -------------------------------------------------------------------------------

@pytest.fixture
def pair(hotel, make_customer, add_history):
    """A survivor and its duplicate, each with history."""
    tenant, owner = hotel
    survivor = make_customer(tenant, name="王伟", address_as="王先生", phone="13812345678", tags=["vip"])
    duplicate = make_customer(tenant, name="王伟 (PMS)", address_as="Mr. Wang", phone="13812345678",
                              phone_alt="02166668888", email="wang@example.com", card_number="VIP-0001",
                              external_ref="PMS-77", birthday=dt.date(1980, 5, 17), company="Harbour Trading",
                              notes="Prefers a quiet room", tags=["vip", "long-stay"], consent_sms=True)
    add_history(tenant, survivor, amounts=("100.00",), tag="s")
    add_history(tenant, duplicate, amounts=("200.50", "300.25"), tag="d")
    return tenant, owner, survivor, duplicate


def test_merge_through_the_pages_moves_everything_and_fills_empty_fields(client, pair, check):
    tenant, owner, survivor, duplicate = pair
    login(client, owner.email)
    page = client.get(f"/customers/{survivor.id}/merge")
    assert page.status_code == 200
    assert "王伟 (PMS)" in page.text and f'value="{duplicate.id}"' in page.text  # shares the phone

    confirm = client.post(f"/customers/{survivor.id}/merge", data={"duplicate_id": str(duplicate.id)})
    assert confirm.status_code == 200
    assert "王伟 (PMS)" in confirm.text and "wang@example.com" in confirm.text and "王先生" in confirm.text
    assert "Transactions: 2" in confirm.text and "Decision makers: 1" in confirm.text
    assert f'action="/customers/{duplicate.id}/merge"' in confirm.text  # "keep the other one instead"
    assert _count(check(tenant), Transaction, Transaction.customer_id == duplicate.id) == 2  # not yet

    r = client.post(f"/customers/{survivor.id}/merge", data={"duplicate_id": str(duplicate.id), "confirm": "yes"})
    assert r.status_code == 303 and r.headers["Location"] == f"/customers/{survivor.id}"
    detail = client.get(r.headers["Location"])
    assert "The duplicate was merged into 王伟." in detail.text
    assert "3 transactions" in detail.text and "600.75" in detail.text

    s = check(tenant)
    for model in (Transaction, Preference, ContactLog, CustomerContact):
        assert _count(s, model, model.customer_id == duplicate.id) == 0, model
    assert _count(s, Transaction, Transaction.customer_id == survivor.id) == 3
    assert _count(s, Preference, Preference.customer_id == survivor.id) == 2
    assert _count(s, ContactLog, ContactLog.customer_id == survivor.id) == 2
    assert _count(s, CustomerContact, CustomerContact.customer_id == survivor.id) == 2
    kept = s.get(Customer, (tenant.id, survivor.id))
    # Filled where empty, never overwritten.
    assert (kept.name, kept.address_as, kept.phone) == ("王伟", "王先生", "13812345678")
    assert (kept.email, kept.card_number, kept.external_ref) == ("wang@example.com", "VIP-0001", "PMS-77")
    assert (kept.phone_alt, kept.birthday, kept.company) == ("02166668888", dt.date(1980, 5, 17), "Harbour Trading")
    assert kept.notes == "Prefers a quiet room" and kept.tags == ["vip", "long-stay"]
    assert kept.consent_sms is False  # consent is not carried over
    gone = s.get(Customer, (tenant.id, duplicate.id))
    assert gone.merged_into_id == survivor.id
    assert (gone.card_number, gone.external_ref) == (None, None)  # unique keys moved
    assert (gone.name, gone.email, gone.phone) == ("王伟 (PMS)", "wang@example.com", "13812345678")  # nothing else erased

    merge_entry, = _audit(s, "merge")
    assert merge_entry.object_type == "customer" and merge_entry.object_id == survivor.id
    assert merge_entry.actor_user_id == owner.id
    assert merge_entry.details["duplicate_id"] == str(duplicate.id)
    assert merge_entry.details["moved"] == {"transactions": 2, "preferences": 1, "contact_logs": 1,
                                            "decision_makers": 1}
    assert {"email", "birthday", "company", "notes"} <= set(merge_entry.details["filled"])
    assert merge_entry.details["keys_moved"] == ["card_number", "external_ref"]
    merged_into, = _audit(s, "merged_into")
    assert merged_into.object_id == duplicate.id


MERGED_REFUSAL = "This customer was merged into another one: record this on the surviving customer."


@pytest.mark.parametrize("path,data,kept", [
    ("decision-makers/new", {"name": "Li Na", "role": "Buyer", "phone": "13900001111"}, 'value="Li Na"'),
    ("preferences/new", {"category": "room", "key": "pillow", "value": "soft", "location_id": ""}, 'value="soft"'),
    ("contact-log/new", {"channel": "call", "occurred_at": "", "outcome": "Asked for Mr. Wang", "next_step": "",
                         "location_id": ""}, "Asked for Mr. Wang"),
], ids=["decision-maker", "preference", "contact-log"])
def test_nothing_new_is_recorded_on_a_merged_customer(client, pair, check, write_session, path, data, kept):
    """What is added after the merge belongs on the survivor: on the duplicate it would sit
    on a record searches no longer show. Refused, what was typed kept, nothing written."""
    tenant, owner, survivor, duplicate = pair
    s = write_session(tenant)
    records.merge_customers(s, survivor.id, duplicate.id, owner.id)
    s.commit()
    login(client, owner.email)
    page = client.get(f"/customers/{duplicate.id}").text
    assert f'action="/customers/{duplicate.id}/{path}' not in page and f'href="/customers/{duplicate.id}/{path}' \
        not in page
    before = [_count(check(tenant), model) for model in (Preference, ContactLog, CustomerContact)]
    r = client.post(f"/customers/{duplicate.id}/{path}", data=data)
    assert r.status_code == 422 and html.escape(MERGED_REFUSAL, quote=False) in r.text
    assert kept in r.text
    assert [_count(check(tenant), model) for model in (Preference, ContactLog, CustomerContact)] == before


def test_merged_and_erased_customers_leave_searches(client, pair, write_session, check):
    tenant, owner, survivor, duplicate = pair
    s = write_session(tenant)
    records.merge_customers(s, survivor.id, duplicate.id, owner.id)
    s.commit()
    s = check(tenant)
    active = {c.name for c in s.scalars(select(Customer).where(records.active_customers_filter()))}
    assert active == {"王伟"}
    # The merge page no longer offers the merged duplicate.
    login(client, owner.email)
    page = client.get(f"/customers/{survivor.id}/merge", query_string={"q": "王"})
    assert "王伟 (PMS)" not in page.text


def test_merge_search_by_name_and_phone(client, hotel, make_customer):
    tenant, owner = hotel
    me = make_customer(tenant, name="Li Na", phone="18655554444")
    other = make_customer(tenant, name="Lina Li", phone="13700002222")
    unrelated = make_customer(tenant, name="Zhang San", phone="13900001111")
    login(client, owner.email)
    page = client.get(f"/customers/{me.id}/merge")
    assert "Lina Li" not in page.text and "No other customer shares" in page.text
    page = client.get(f"/customers/{me.id}/merge", query_string={"q": "lin"})
    assert f'value="{other.id}"' in page.text and "Zhang San" not in page.text
    page = client.get(f"/customers/{me.id}/merge", query_string={"q": "0111"})
    assert f'value="{unrelated.id}"' in page.text and "Lina Li" not in page.text
    assert f'value="{me.id}"' not in page.text  # never itself
    for q in ("%", "\x00", "x" * 500):
        assert client.get(f"/customers/{me.id}/merge", query_string={"q": q}).status_code == 200


def test_merge_refuses_itself_and_merged_or_erased_customers(client, hotel, make_customer, write_session, check):
    tenant, owner = hotel
    a = make_customer(tenant, name="A", phone="111")
    b = make_customer(tenant, name="B", phone="111")
    c = make_customer(tenant, name="C", phone="111")
    e = make_customer(tenant, name="E", phone="111")
    s = write_session(tenant)
    records.merge_customers(s, a.id, b.id, owner.id)
    records.erase_customer(s, e.id, owner.id, NOW)
    s.commit()
    login(client, owner.email)
    cases = [
        (a, a, "A customer cannot be merged into itself."),
        (c, b, "This customer was already merged into another one."),  # b is merged
        (b, c, "This customer was already merged into another one."),  # into a merged one
        (c, e, "An erased customer cannot be merged."),
    ]
    before = len(_audit(check(tenant)))
    for survivor, duplicate, message in cases:
        for confirm in ("", "yes"):
            r = client.post(f"/customers/{survivor.id}/merge",
                            data={"duplicate_id": str(duplicate.id), "confirm": confirm})
            assert r.status_code == 422, (survivor.name, duplicate.name)
            assert message in r.text
    s = check(tenant)
    assert len(_audit(s)) == before
    assert s.get(Customer, (tenant.id, c.id)).merged_into_id is None
    with pytest.raises(ValidationFailed):
        records.merge_customers(write_session(tenant), a.id, a.id, owner.id)


@pytest.mark.parametrize("value", ["", "not-a-uuid", "12345", "\x00"])
def test_merge_bad_input_is_422(client, hotel, make_customer, check, value):
    tenant, owner = hotel
    a = make_customer(tenant, name="A")
    login(client, owner.email)
    r = client.post(f"/customers/{a.id}/merge", data={"duplicate_id": value, "confirm": "yes"})
    assert r.status_code == 422
    assert "Choose the customer to merge from the list." in r.text
    assert _audit(check(tenant)) == []


def test_merge_with_another_tenants_customer_is_404(client, make_tenant, make_customer, write_session, check):
    tenant, owner = make_tenant("hotel")
    other_tenant, _o = make_tenant("bank")
    mine = make_customer(tenant, name="Mine", phone="111")
    theirs = make_customer(other_tenant, name="Theirs", phone="111")
    login(client, owner.email)
    for confirm in ("", "yes"):
        r = client.post(f"/customers/{mine.id}/merge", data={"duplicate_id": str(theirs.id), "confirm": confirm})
        assert r.status_code == 404
    assert f'value="{theirs.id}"' not in client.get(f"/customers/{mine.id}/merge", query_string={"q": "Theirs"}).text
    with pytest.raises(NotFound):
        records.merge_customers(write_session(tenant), mine.id, theirs.id, owner.id)
    assert check(other_tenant).get(Customer, (other_tenant.id, theirs.id)).merged_into_id is None
    assert _audit(check(tenant)) == []


def test_merge_hooks_let_other_domains_move_their_rows(hotel, make_customer, write_session, check, monkeypatch):
    tenant, owner = hotel
    a = make_customer(tenant, name="A")
    b = make_customer(tenant, name="B")
    calls = []

    def move_points(s, survivor, duplicate, actor_user_id):
        calls.append((survivor.id, duplicate.id, actor_user_id))
        return {"points_entries": 3}

    monkeypatch.setattr(records, "MERGE_HOOKS", [move_points])
    s = write_session(tenant)
    records.merge_customers(s, a.id, b.id, owner.id)
    s.commit()
    assert calls == [(a.id, b.id, owner.id)]
    entry, = _audit(check(tenant), "merge")
    assert entry.details["moved"]["points_entries"] == 3


def test_merge_repoints_customers_merged_earlier(hotel, make_customer, write_session, check):
    tenant, owner = hotel
    a, b, c = (make_customer(tenant, name=n) for n in "ABC")
    s = write_session(tenant)
    records.merge_customers(s, b.id, c.id, owner.id)
    records.merge_customers(s, a.id, b.id, owner.id)
    s.commit()
    s = check(tenant)
    assert s.get(Customer, (tenant.id, c.id)).merged_into_id == a.id
    assert _audit(s, "merge")[-1].details["moved"]["merged_records"] == 1


def test_merge_needs_a_manager(client, hotel, make_customer, add_member):
    tenant, _owner = hotel
    a = make_customer(tenant, name="A")
    b = make_customer(tenant, name="B")
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    assert client.get(f"/customers/{a.id}/merge").status_code == 403
    assert client.post(f"/customers/{a.id}/merge", data={"duplicate_id": str(b.id), "confirm": "yes"}).status_code == 403
    manager = add_member(tenant, "manager")
    client.post("/logout")
    login(client, manager.email)
    assert client.get(f"/customers/{a.id}/merge").status_code == 200


# --- reassign on deactivation -------------------------------------------------------------

def _membership(s, user):
    return s.scalar(select(Membership).where(Membership.user_id == user.id))


def test_deactivating_a_member_who_owns_customers_asks_to_reassign(client, hotel, add_member, make_customer,
                                                                   check):
    tenant, owner = hotel
    seller = add_member(tenant, "staff")
    manager = add_member(tenant, "manager")
    for name in ("王伟", "Li Na"):
        make_customer(tenant, name=name, owner_user_id=seller.id)
    make_customer(tenant, name="Not theirs", owner_user_id=manager.id)
    m = _membership(check(tenant), seller)
    login(client, owner.email)

    r = client.post(f"/settings/staff/{m.id}/deactivate")
    assert r.status_code == 303 and r.headers["Location"] == f"/settings/staff/{m.id}/reassign"
    page = client.get(r.headers["Location"])
    assert page.status_code == 200
    assert f"{seller.name} looks after 2 customers." in page.text
    assert "王伟" in page.text and "Li Na" in page.text and "Not theirs" not in page.text
    assert manager.name in page.text and f'value="{seller.id}"' not in page.text  # not to themself
    staff_page = client.get("/settings/staff")
    assert "Reassign 2 customers" in staff_page.text

    r = client.post(f"/settings/staff/{m.id}/reassign", data={"to_user_id": str(manager.id)})
    assert r.status_code == 303 and r.headers["Location"] == "/settings/staff"
    staff_page = client.get("/settings/staff")
    assert f"2 customers are now looked after by {manager.name}." in staff_page.text
    assert "Reassign 2 customers" not in staff_page.text
    s = check(tenant)
    assert _count(s, Customer, Customer.owner_user_id == seller.id) == 0
    assert _count(s, Customer, Customer.owner_user_id == manager.id) == 3
    entries = _audit(s, "reassign")
    assert sorted(e.object_type for e in entries) == ["customer", "customer", "user"]
    summary = next(e for e in entries if e.object_type == "user")
    assert summary.object_id == seller.id and summary.actor_user_id == owner.id
    assert summary.details == {"from_user_id": str(seller.id), "to_user_id": str(manager.id), "customers": 2}
    # The customer's audit log names both.
    customer = s.scalar(select(Customer).where(Customer.name == "王伟"))
    log = client.get(f"/customers/{customer.id}/audit")
    assert f"from {seller.name} to {manager.name}" in log.text


def test_deactivating_a_member_without_customers_returns_to_staff(client, hotel, add_member, check):
    tenant, owner = hotel
    staff = add_member(tenant, "staff")
    m = _membership(check(tenant), staff)
    login(client, owner.email)
    r = client.post(f"/settings/staff/{m.id}/deactivate")
    assert r.status_code == 303 and r.headers["Location"] == "/settings/staff"
    page = client.get(f"/settings/staff/{m.id}/reassign")
    assert page.status_code == 200 and "looks after no customers" in page.text


def test_reassign_refuses_a_target_that_is_not_another_active_member(client, make_tenant, add_member,
                                                                      make_customer, write_session, check):
    tenant, owner = make_tenant("hotel")
    other_tenant, other_owner = make_tenant("bank")
    seller = add_member(tenant, "staff")
    gone = add_member(tenant, "staff")
    make_customer(tenant, name="王伟", owner_user_id=seller.id)
    s = write_session(tenant)
    _membership(s, gone).active = False
    s.commit()
    m = _membership(check(tenant), seller)
    login(client, owner.email)
    for target in (str(gone.id), str(seller.id), str(other_owner.id), "", "garbage", str(uuid.uuid4())):
        r = client.post(f"/settings/staff/{m.id}/reassign", data={"to_user_id": target})
        assert r.status_code == 422, target
        assert ("Choose one of the listed values." in r.text
                or "Choose another active member of your business." in r.text), target
        assert "王伟" in r.text  # the page is shown again
    # The service checks the same without the form.
    s = write_session(tenant)
    for target in (gone.id, seller.id, other_owner.id, None):
        with pytest.raises(ValidationFailed) as exc:
            records.reassign_customers(s, seller.id, target, owner.id)
        assert "to_user_id" in exc.value.errors
        s.rollback()
    with pytest.raises(NotFound):
        records.reassign_customers(s, other_owner.id, owner.id, owner.id)
    s.rollback()
    s = check(tenant)
    assert _count(s, Customer, Customer.owner_user_id == seller.id) == 1
    assert _audit(s) == []


def test_reassign_is_for_the_owner(client, hotel, add_member, check):
    tenant, _owner = hotel
    manager = add_member(tenant, "manager")
    staff = add_member(tenant, "staff")
    m = _membership(check(tenant), staff)
    login(client, manager.email)
    assert client.get(f"/settings/staff/{m.id}/reassign").status_code == 403
    assert client.post(f"/settings/staff/{m.id}/reassign", data={"to_user_id": str(manager.id)}).status_code == 403


# --- export -------------------------------------------------------------------------------

def test_export_downloads_everything_as_json(client, pair, add_member, check):
    tenant, owner, survivor, duplicate = pair
    manager = add_member(tenant, "manager")
    login(client, manager.email)
    r = client.post(f"/customers/{duplicate.id}/export.json")
    assert r.status_code == 200
    assert r.mimetype == "application/json"
    assert r.headers["Content-Disposition"] == f'attachment; filename="customer-{duplicate.id}.json"'
    data = json.loads(r.data)
    c = data["customer"]
    assert (c["id"], c["name"], c["address_as"], c["phone"], c["phone_alt"]) == (
        str(duplicate.id), "王伟 (PMS)", "Mr. Wang", "13812345678", "02166668888")
    assert (c["email"], c["card_number"], c["external_ref"], c["birthday"]) == (
        "wang@example.com", "VIP-0001", "PMS-77", "1980-05-17")
    assert c["consent"] == {"phone": False, "sms": True, "email": False}
    assert c["tags"] == ["vip", "long-stay"] and c["notes"] == "Prefers a quiet room"
    assert data["decision_makers"] == [{"name": "Buyer d", "role": "采购经理", "phone": "13900000000"}]
    assert [(p["key"], p["value"]) for p in data["preferences"]] == [("pillow d", "firm")]
    assert [(x["outcome"], x["next_step"]) for x in data["contact_log"]] == [("outcome d", "next d")]
    assert [(t["occurred_on"], t["amount"]) for t in data["transactions"]] == [
        ("2025-01-01", "200.50"), ("2025-01-02", "300.25")]
    assert data["transactions"][0]["kind"] and data["transactions_total"] == "500.75"
    entry, = _audit(check(tenant), "export")
    assert (entry.object_id, entry.actor_user_id, entry.object_type) == (duplicate.id, manager.id, "customer")


def test_export_is_a_button_not_a_link(client, app, hotel, make_customer, add_member, check, monkeypatch):
    """The export writes an audit entry, so it is a POST with the CSRF token: a GET (a link
    another site or a prefetcher could make the browser follow) exports and records nothing."""
    tenant, _owner = hotel
    c = make_customer(tenant, name="A")
    manager = add_member(tenant, "manager", language="zh_CN")
    login(client, manager.email)
    monkeypatch.setitem(app.config, "WTF_CSRF_ENABLED", True)
    assert client.get(f"/customers/{c.id}/export.json").status_code == 405
    assert client.post(f"/customers/{c.id}/export.json").status_code == 400  # no token
    assert _audit(check(tenant)) == []
    page = client.get(f"/customers/{c.id}").text
    assert "导出数据（JSON）" in page and f'action="/customers/{c.id}/export.json"' in page
    r = client.post(f"/customers/{c.id}/export.json", data={"csrf_token": csrf_from(page)})
    assert r.status_code == 200 and json.loads(r.data)["customer"]["name"] == "A"
    entry, = _audit(check(tenant), "export")
    assert (entry.object_id, entry.actor_user_id) == (c.id, manager.id)


def test_export_is_not_for_staff(client, hotel, make_customer, add_member, check):
    tenant, _owner = hotel
    c = make_customer(tenant, name="A")
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    assert client.post(f"/customers/{c.id}/export.json").status_code == 403
    assert _audit(check(tenant)) == []


# --- erase --------------------------------------------------------------------------------

PERSONAL = ("王伟 (PMS)", "Mr. Wang", "13812345678", "02166668888", "wang@example.com", "VIP-0001", "PMS-77",
            "1980-05-17", "Harbour Trading", "Prefers a quiet room", "long-stay", "outcome d", "next d",
            "Buyer d", "pillow d", "note d")


def test_erase_anonymises_everything_personal_and_keeps_the_books(client, pair, check):
    tenant, owner, survivor, duplicate = pair
    s = check(tenant)
    total_before = s.scalar(select(func.sum(Transaction.amount)))
    login(client, owner.email)
    page = client.get(f"/customers/{duplicate.id}/erase")
    assert page.status_code == 200 and "Type 王伟 (PMS) or ERASE." in page.text

    r = client.post(f"/customers/{duplicate.id}/erase", data={"confirm": "王伟"})
    assert r.status_code == 422
    assert "Type the customer&#39;s name exactly as shown, or ERASE." in r.text
    assert 'value="王伟"' in r.text  # what was typed is kept
    assert check(tenant).get(Customer, (tenant.id, duplicate.id)).erased_at is None

    r = client.post(f"/customers/{duplicate.id}/erase", data={"confirm": "ERASE"})
    assert r.status_code == 303 and r.headers["Location"] == f"/customers/{duplicate.id}"
    detail = client.get(r.headers["Location"])
    assert detail.status_code == 200 and "Erased customer #" in detail.text
    assert "2 transactions" in detail.text

    s = check(tenant)
    c = s.get(Customer, (tenant.id, duplicate.id))
    assert c.name == f"已删除客户 / Erased customer #{duplicate.id.hex[-8:]}"
    assert (c.address_as, c.phone, c.phone_alt, c.email, c.gender, c.company, c.job_title, c.plate_number,
            c.notes, c.company_industry, c.company_size) == ("",) * 11
    assert (c.birthday, c.external_ref, c.card_number, c.tags) == (None, None, None, [])
    assert not (c.consent_phone or c.consent_sms or c.consent_email)
    assert c.erased_at is not None
    assert _count(s, Preference, Preference.customer_id == duplicate.id) == 0
    assert _count(s, CustomerContact, CustomerContact.customer_id == duplicate.id) == 0
    log, = s.scalars(select(ContactLog).where(ContactLog.customer_id == duplicate.id))
    assert (log.outcome, log.next_step, log.channel) == ("", "", "call")
    txs = list(s.scalars(select(Transaction).where(Transaction.customer_id == duplicate.id)
                         .order_by(Transaction.occurred_on)))
    assert [(t.occurred_on, t.amount, t.note) for t in txs] == [
        (dt.date(2025, 1, 1), Decimal("200.50"), ""), (dt.date(2025, 1, 2), Decimal("300.25"), "")]
    assert s.scalar(select(func.sum(Transaction.amount))) == total_before
    # The survivor of the pair is untouched.
    assert s.get(Customer, (tenant.id, survivor.id)).phone == "13812345678"
    assert _count(s, Preference, Preference.customer_id == survivor.id) == 1

    entry, = _audit(s, "erase")
    assert (entry.object_id, entry.actor_user_id) == (duplicate.id, owner.id)
    assert entry.details["transactions_kept"] == 2 and entry.details["preferences_deleted"] == 1
    dumped = json.dumps(entry.details, ensure_ascii=False)
    assert not [p for p in PERSONAL if p in dumped]
    # The export of an erased customer holds nothing personal either.
    exported = client.post(f"/customers/{duplicate.id}/export.json").data.decode()
    assert not [p for p in PERSONAL if p in exported]
    assert '"amount": "200.50"' in exported

    # Erasing twice is refused, and nothing more is written.
    r = client.post(f"/customers/{duplicate.id}/erase", data={"confirm": "ERASE"})
    assert r.status_code == 422 and "already erased" in r.text
    assert len(_audit(check(tenant), "erase")) == 1
    assert "was erased on" in client.get(f"/customers/{duplicate.id}/erase").text


def test_erase_by_typing_the_name_also_erases_records_merged_into_it(client, pair, write_session, check):
    tenant, owner, survivor, duplicate = pair
    s = write_session(tenant)
    records.merge_customers(s, survivor.id, duplicate.id, owner.id)
    s.commit()
    login(client, owner.email)
    r = client.post(f"/customers/{survivor.id}/erase", data={"confirm": " 王伟 "})
    assert r.status_code == 303
    s = check(tenant)
    for cid in (survivor.id, duplicate.id):
        c = s.get(Customer, (tenant.id, cid))
        assert c.erased_at is not None and c.email == "" and c.phone == "", cid
    assert _count(s, Transaction, Transaction.customer_id == survivor.id) == 3
    entry = next(e for e in _audit(s, "erase") if e.object_id == survivor.id)
    assert entry.details["merged_records_erased"] == 1
    assert not [p for p in PERSONAL + ("王伟",) if p in json.dumps(entry.details, ensure_ascii=False)]
    with pytest.raises(ValidationFailed):
        records.erase_customer(write_session(tenant), survivor.id, owner.id, NOW)


@pytest.mark.parametrize("role", ["staff", "manager"])
def test_erase_is_for_the_owner_only(client, hotel, make_customer, add_member, check, role):
    tenant, _owner = hotel
    c = make_customer(tenant, name="A", phone="111")
    user = add_member(tenant, role)
    login(client, user.email)
    assert client.get(f"/customers/{c.id}/erase").status_code == 403
    assert client.post(f"/customers/{c.id}/erase", data={"confirm": "ERASE"}).status_code == 403
    assert check(tenant).get(Customer, (tenant.id, c.id)).erased_at is None


@pytest.mark.parametrize("typed", ["", "   ", "erase!", "\x00", "x" * 5000])
def test_erase_bad_confirmation_is_422(client, hotel, make_customer, check, typed):
    tenant, owner = hotel
    c = make_customer(tenant, name="A", phone="111")
    login(client, owner.email)
    r = client.post(f"/customers/{c.id}/erase", data={"confirm": typed})
    assert r.status_code == 422
    assert "This field is required." in r.text or "exactly as shown" in r.text
    assert check(tenant).get(Customer, (tenant.id, c.id)).erased_at is None
    assert _audit(check(tenant)) == []


# --- audit log ---------------------------------------------------------------------------

def test_audit_log_lists_who_did_what(client, pair, add_member, write_session):
    tenant, owner, survivor, duplicate = pair
    s = write_session(tenant)
    records.merge_customers(s, survivor.id, duplicate.id, owner.id)
    s.commit()
    manager = add_member(tenant, "manager")
    login(client, manager.email)
    client.post(f"/customers/{survivor.id}/export.json")
    page = client.get(f"/customers/{survivor.id}/audit")
    assert page.status_code == 200
    assert "Merged a duplicate into this customer" in page.text and "Exported the customer" in page.text
    assert owner.name in page.text and manager.name in page.text
    assert "Transactions 2" in page.text and f"/customers/{duplicate.id}" in page.text
    dup_page = client.get(f"/customers/{duplicate.id}/audit")
    assert "Merged into another customer" in dup_page.text and f"/customers/{survivor.id}" in dup_page.text
    client.post("/logout")
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    assert client.get(f"/customers/{survivor.id}/audit").status_code == 403


def test_audit_log_empty(client, hotel, make_customer):
    tenant, owner = hotel
    c = make_customer(tenant, name="A")
    login(client, owner.email)
    page = client.get(f"/customers/{c.id}/audit")
    assert page.status_code == 200 and "Nothing recorded yet." in page.text


# --- the tenant wall ----------------------------------------------------------------------

def test_every_route_answers_404_for_another_tenants_ids(client, make_tenant, add_member, make_customer, check):
    tenant, owner = make_tenant("hotel")
    other_tenant, other_owner = make_tenant("bank")
    mine = make_customer(tenant, name="Mine")
    theirs = make_customer(other_tenant, name="Theirs", owner_user_id=other_owner.id)
    their_staff = add_member(other_tenant, "staff")
    their_membership = _membership(check(other_tenant), their_staff)
    login(client, owner.email)
    customer_urls = [f"/customers/{theirs.id}/{p}" for p in ("merge", "erase", "audit")]
    for url in customer_urls + [f"/settings/staff/{their_membership.id}/reassign"]:
        assert client.get(url).status_code == 404, url
    posts = {
        f"/customers/{theirs.id}/merge": {"duplicate_id": str(mine.id), "confirm": "yes"},
        f"/customers/{theirs.id}/erase": {"confirm": "ERASE"},
        f"/customers/{theirs.id}/export.json": {},
        f"/settings/staff/{their_membership.id}/reassign": {"to_user_id": str(owner.id)},
        f"/settings/staff/{their_membership.id}/deactivate": {},
    }
    for url, data in posts.items():
        assert client.post(url, data=data).status_code == 404, url
    s = check(other_tenant)
    c = s.get(Customer, (other_tenant.id, theirs.id))
    assert (c.name, c.merged_into_id, c.erased_at, c.owner_user_id) == ("Theirs", None, None, other_owner.id)
    assert _membership(s, their_staff).active is True
    assert _audit(s) == [] and _audit(check(tenant)) == []
