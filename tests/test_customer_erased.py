"""A customer whose personal data was erased (PIPL/GDPR) gets none back: the profile edit,
decision makers, preferences and contact log refuse it (422 with the reason, nothing
written), their buttons are gone from the customer page and the guest card, and the API's
upsert by ref refuses it with the code customer_erased. Transactions stay allowed (the
books keep them). Both databases."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from saas import clock
from saas.customers import records, services
from saas.customers.models import ContactLog, Customer, CustomerContact, Preference, Transaction
from saas.errors import ValidationFailed
from saas.settings import services as settings_services
from tests.conftest import assert_error, login
from tests.test_api_customers import auth

REFUSAL = "personal data was erased; nothing new can be recorded about them."
LOGGED_AT = dt.datetime(2025, 3, 1, 6, 30, tzinfo=dt.timezone.utc)


@pytest.fixture
def erased(hotel, make_customer, add_member, write_session):
    """An erased company customer with one contact log entry (emptied by the erasure) logged
    by a staff member: (tenant, owner, staff, customer, entry)."""
    tenant, owner = hotel
    staff = add_member(tenant, "staff")
    customer = make_customer(tenant, name="王伟", company="Harbour Trading", phone="+8613812345678",
                             external_ref="PMS-77")
    s = write_session(tenant)
    entry = ContactLog(customer_id=customer.id, channel="call", occurred_at=LOGGED_AT, outcome="Interested",
                       next_step="Call back", staff_user_id=staff.id)
    s.add(entry)
    s.add(Preference(customer_id=customer.id, category=next(iter(services.PREFERENCE_CATEGORIES)), key="pillow",
                     value="soft", recorded_at=LOGGED_AT))
    s.commit()
    records.erase_customer(s, customer.id, owner.id, clock.now_utc())
    s.commit()
    return tenant, owner, staff, customer, entry


def _count(s, model, *where) -> int:
    return s.scalar(select(func.count()).select_from(model).where(*where))


def _personal_rows(s, customer) -> tuple:
    c = s.get(Customer, (customer.tenant_id, customer.id))
    log = s.scalar(select(ContactLog).where(ContactLog.customer_id == customer.id))
    return (c.name, c.phone, c.email, c.notes, c.external_ref, c.company,
            _count(s, Preference, Preference.customer_id == customer.id),
            _count(s, CustomerContact, CustomerContact.customer_id == customer.id),
            _count(s, ContactLog, ContactLog.customer_id == customer.id), log.outcome, log.next_step)


# --- the services refuse --------------------------------------------------------------------------

def test_services_refuse_new_personal_data(erased, write_session):
    tenant, owner, staff, customer, entry = erased
    s = write_session(tenant)
    c = services.get_customer(s, customer.id)
    now = clock.now_utc()
    calls = [
        lambda: services.update_customer(s, c, {"name": "王伟", "phone": "13812345678"}),
        lambda: services.add_decision_maker(s, c, {"name": "Li Na"}),
        lambda: services.add_preference(s, c, {"category": "room", "key": "pillow", "value": "soft"}, staff.id, now),
        lambda: services.log_contact(s, c, {"channel": "call", "outcome": "Asked for Mr. Wang"}, staff.id, now,
                                     "Asia/Shanghai"),
        lambda: services.update_contact_log(s, c, entry.id, {"channel": "call", "occurred_at": "2025-03-01T14:30",
                                                             "outcome": "Mr. Wang again"},
                                            staff.id, now, "Asia/Shanghai"),
    ]
    for call in calls:
        with pytest.raises(ValidationFailed) as exc:
            call()
        assert exc.value.code == "customer_erased"
        assert REFUSAL in str(exc.value.errors[""][0])
    s.rollback()
    assert c.erased_at is not None and c.phone == ""
    # Removing what was recorded is not refused (there is nothing left to remove).


def test_a_transaction_is_still_recorded(erased, write_session, client, tenant_session):
    tenant, owner, staff, customer, entry = erased
    login(client, staff.email)
    r = client.get(f"/customers/{customer.id}/transactions/new")
    assert r.status_code == 200
    kind = services.default_kind(tenant_session(tenant))
    r = client.post(f"/customers/{customer.id}/transactions/new",
                    data={"kind_id": str(kind.id), "occurred_on": clock.today("Asia/Shanghai").isoformat(),
                          "amount": "120", "quantity": "1", "location_id": "", "department_id": "", "note": ""})
    assert r.status_code == 303, r.text
    assert _count(tenant_session(tenant), Transaction, Transaction.customer_id == customer.id) == 1
    # ... but without a note: erasure cleared the notes, a new one would bring data back.
    r = client.post(f"/customers/{customer.id}/transactions/new",
                    data={"kind_id": str(kind.id), "occurred_on": clock.today("Asia/Shanghai").isoformat(),
                          "amount": "80", "quantity": "1", "location_id": "", "department_id": "",
                          "note": "Mr. Wang's room 1208"})
    assert r.status_code == 422
    assert "This customer&#39;s personal data was erased: leave the note empty." in r.text
    assert "Mr. Wang&#39;s room 1208" in r.text  # what was typed is kept
    assert _count(tenant_session(tenant), Transaction, Transaction.customer_id == customer.id) == 1


# --- the views answer 422 and write nothing -----------------------------------------------------

FORMS = [
    ("edit", {"name": "王伟", "phone": "13812345678", "email": "wang@example.com", "classification": "regular"}),
    ("decision-makers/new", {"name": "Li Na", "role": "Buyer", "phone": "13900001111"}),
    ("preferences/new", {"category": "room", "key": "pillow", "value": "soft", "location_id": ""}),
    ("contact-log/new", {"channel": "call", "occurred_at": "", "outcome": "Asked for Mr. Wang", "next_step": "",
                         "location_id": ""}),
    ("contact-log/{entry}/edit", {"channel": "call", "occurred_at": "2025-03-01T14:30", "outcome": "Mr. Wang",
                                  "next_step": "Call him", "location_id": ""}),
]


@pytest.mark.parametrize("path,data", FORMS, ids=[f[0] for f in FORMS])
@pytest.mark.parametrize("back", ["", "?return=card"])
def test_forms_refuse_with_422_and_write_nothing(erased, client, tenant_session, path, data, back):
    tenant, owner, staff, customer, entry = erased
    before = _personal_rows(tenant_session(tenant), customer)
    login(client, staff.email)
    url = f"/customers/{customer.id}/{path.format(entry=entry.id)}{back}"
    page = client.get(url)
    assert page.status_code == 200 and REFUSAL in page.text
    assert f'action="/customers/{customer.id}/' not in page.text  # no form to fill in
    r = client.post(url, data=data)
    assert r.status_code == 422 and REFUSAL in r.text
    assert "Interested" not in r.text and "Traceback" not in r.text
    assert _personal_rows(tenant_session(tenant), customer) == before


def test_an_invalid_form_is_refused_for_the_erasure_too(erased, client, tenant_session):
    """Empty fields do not hide the reason: the erasure is said, not 'required'."""
    tenant, owner, staff, customer, entry = erased
    login(client, staff.email)
    r = client.post(f"/customers/{customer.id}/preferences/new", data={})
    assert r.status_code == 422 and REFUSAL in r.text and "This field is required." not in r.text


def test_a_decision_maker_left_on_an_erased_customer_is_not_edited(erased, client, write_session, tenant_session):
    """Should a row have been left (recorded before this refusal existed), it is not changed."""
    tenant, owner, staff, customer, entry = erased
    s = write_session(tenant)
    contact = CustomerContact(customer_id=customer.id, name="Li Na", role="", phone="")
    s.add(contact)
    s.commit()
    login(client, staff.email)
    url = f"/customers/{customer.id}/decision-makers/{contact.id}/edit"
    r = client.post(url, data={"name": "Li Na (buyer)", "role": "Buyer", "phone": ""})
    assert r.status_code == 422 and REFUSAL in r.text
    assert tenant_session(tenant).get(CustomerContact, (tenant.id, contact.id)).name == "Li Na"
    # Removing it is allowed: it takes personal data away.
    r = client.post(f"/customers/{customer.id}/decision-makers/{contact.id}/delete")
    assert r.status_code == 303
    assert tenant_session(tenant).get(CustomerContact, (tenant.id, contact.id)) is None


def test_the_refusal_in_chinese(erased, client, add_member):
    tenant, owner, staff, customer, entry = erased
    zh = add_member(tenant, "staff", language="zh_CN")
    login(client, zh.email)
    r = client.post(f"/customers/{customer.id}/contact-log/new", data={"channel": "call", "outcome": "x"})
    assert r.status_code == 422 and "该客户的个人信息已删除" in r.text


# --- the buttons are gone ---------------------------------------------------------------------------

def test_customer_page_and_guest_card_offer_no_way_to_add(erased, client, make_customer):
    tenant, owner, staff, customer, entry = erased
    login(client, owner.email)
    page = client.get(f"/customers/{customer.id}")
    assert page.status_code == 200
    base = f"/customers/{customer.id}"
    for gone in (f"{base}/edit", f"{base}/preferences/new", f"{base}/contact-log/new",
                 f"{base}/contact-log/{entry.id}/edit", f"{base}/decision-makers/new", "Log a contact",
                 "Add a preference"):
        assert gone not in page.text, gone
    assert "Personal data erased on" in page.text
    assert "Their profile, preferences and contact log can no longer be changed." in page.text
    assert f"{base}/transactions/new" in page.text  # the books go on
    card = client.get(f"/frontdesk/{customer.id}", headers={"HX-Request": "true"})
    assert card.status_code == 200
    assert "preferences/new" not in card.text and "contact-log/new" not in card.text
    assert "Add preference" not in card.text and "Log contact" not in card.text
    assert "Record visit" in card.text
    # Another customer of the tenant still has them.
    other = make_customer(tenant, name="Li Na")
    assert f"/customers/{other.id}/contact-log/new" in client.get(f"/customers/{other.id}").text
    card = client.get(f"/frontdesk/{other.id}", headers={"HX-Request": "true"}).text
    assert "Add preference" in card and "Log contact" in card


# --- the API ---------------------------------------------------------------------------------------

@pytest.fixture
def key(erased, write_session):
    tenant = erased[0]
    s = write_session(tenant)
    _k, full = settings_services.create_api_key(s, "PMS", None)
    s.commit()
    return full


def test_api_upsert_refuses_an_erased_customer(erased, key, client, write_session, tenant_session):
    """Erasure clears the ref; should one still lead to an erased customer (set again
    before this refusal existed, or the ref of a record merged into it), the upsert is
    refused as a whole."""
    tenant, owner, staff, customer, entry = erased
    s = write_session(tenant)
    s.get(Customer, (tenant.id, customer.id)).external_ref = "PMS-77"
    s.commit()
    before = _personal_rows(tenant_session(tenant), customer)
    r = client.post("/api/v1/customers", json={"ref": "PMS-77", "name": "王伟", "phone": "13812345678",
                                               "email": "wang@example.com"}, headers=auth(key))
    err = assert_error(r, 422, "customer_erased")
    assert REFUSAL in err["message"] and REFUSAL in err["details"]["ref"][0]
    assert _personal_rows(tenant_session(tenant), customer) == before
    # Even a body with nothing personal but the ref is refused: it would be an update.
    assert_error(client.post("/api/v1/customers", json={"ref": "PMS-77"}, headers=auth(key)), 422,
                 "customer_erased")
    # Reading it is fine and shows nothing personal.
    got = client.get("/api/v1/customers/PMS-77", headers=auth(key)).get_json()
    assert got["phone"] == "" and got["email"] == ""


def test_api_old_ref_after_erasure_makes_a_new_customer(erased, key, client, tenant_session):
    """The erasure cleared the ref: the tenant's system sending it again creates a new,
    separate customer; the erased record stays anonymous."""
    tenant, owner, staff, customer, entry = erased
    before = _personal_rows(tenant_session(tenant), customer)
    r = client.post("/api/v1/customers", json={"ref": "PMS-77", "name": "王伟"}, headers=auth(key))
    assert r.status_code == 201, r.text
    s = tenant_session(tenant)
    new = s.scalar(select(Customer).where(Customer.external_ref == "PMS-77"))
    assert new.id != customer.id and new.erased_at is None
    assert _personal_rows(s, customer) == before
