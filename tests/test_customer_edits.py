"""Editing what was recorded about a customer: contact log entries (by the staff member who
logged them, or a manager, with the change in the audit log) and decision makers."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select

from saas import clock
from saas.customers import records
from saas.customers.models import AuditEntry, ContactLog, Customer, CustomerContact
from saas.settings.models import Location
from tests.conftest import PASSWORD, csrf_from, login

# 14:30 in Shanghai (the hotel preset's zone) is 06:30 UTC.
LOGGED_AT = dt.datetime(2025, 3, 1, 6, 30, 17, tzinfo=dt.timezone.utc)


def _audit(s, action=records.CONTACT_LOG_EDIT):
    return list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)
                          .order_by(AuditEntry.created_at, AuditEntry.id)))


@pytest.fixture
def logged(hotel, make_customer, add_member, write_session):
    """A customer with a call logged by a staff member: (tenant, owner, customer, entry, author)."""
    tenant, owner = hotel
    author = add_member(tenant, "staff")
    customer = make_customer(tenant, name="王伟", company="Harbour Trading")
    s = write_session(tenant)
    main = s.scalar(select(Location).order_by(Location.position))
    entry = ContactLog(customer_id=customer.id, channel="call", occurred_at=LOGGED_AT, outcome="Interested in a suite",
                       next_step="Send the offer", staff_user_id=author.id, location_id=main.id)
    s.add(entry)
    s.commit()
    return tenant, owner, customer, entry, author


def _form(**overrides) -> dict:
    data = {"channel": "call", "occurred_at": "2025-03-01T14:30", "outcome": "Interested in a suite",
            "next_step": "Send the offer", "location_id": ""}
    data.update(overrides)
    return data


# --- contact log ------------------------------------------------------------------------------

def test_author_edits_the_entry_and_the_change_is_audited(client, logged, add_member, tenant_session):
    tenant, owner, customer, entry, author = logged
    login(client, author.email)
    page = client.get(f"/customers/{customer.id}").text
    edit_url = f"/customers/{customer.id}/contact-log/{entry.id}/edit"
    assert f'href="{edit_url}"' in page
    form = client.get(edit_url)
    assert form.status_code == 200
    # The stored values, the time in the tenant's zone as a datetime-local shows it.
    assert 'value="2025-03-01T14:30"' in form.text and "Interested in a suite" in form.text
    assert 'value="Send the offer"' in form.text and "Save changes" in form.text

    r = client.post(edit_url, data=_form(channel="visit", occurred_at="2025-03-01T15:00",
                                         outcome="Booked the suite", next_step=""))
    assert r.status_code == 303 and r.headers["Location"] == f"/customers/{customer.id}"
    page = client.get(r.headers["Location"]).text
    assert "Contact log entry saved." in page and "Booked the suite" in page
    assert "Interested in a suite" not in page and "Next step:" not in page

    s = tenant_session(tenant)
    e = s.get(ContactLog, (tenant.id, entry.id))
    assert (e.channel, e.occurred_at, e.outcome, e.next_step) == (
        "visit", dt.datetime(2025, 3, 1, 7, 0, tzinfo=dt.timezone.utc), "Booked the suite", "")
    assert e.staff_user_id == author.id and e.location_id is None  # still the author's entry
    audit, = _audit(s)
    assert (audit.actor_user_id, audit.object_type, audit.object_id) == (author.id, "customer", customer.id)
    assert audit.details["contact_log_id"] == str(entry.id)
    changes = audit.details["changes"]
    assert changes["channel"] == ["call", "visit"]
    assert changes["occurred_at"] == ["2025-03-01T06:30:17+00:00", "2025-03-01T07:00:00+00:00"]
    assert changes["outcome"] == ["Interested in a suite", "Booked the suite"]
    assert changes["next_step"] == ["Send the offer", ""]
    assert changes["location"][1] == "" and changes["location"][0]

    # A manager reads it in the customer's audit log, in words.
    client.post("/logout")
    manager = add_member(tenant, "manager")
    login(client, manager.email)
    log = client.get(f"/customers/{customer.id}/audit").text
    assert "Edited a contact log entry" in log and author.name in log
    assert "Outcome: Interested in a suite → Booked the suite" in log
    assert "Kind of contact: Call → Visit" in log and "Next step: Send the offer → —" in log


def test_saving_unchanged_keeps_the_seconds_and_writes_no_audit(client, logged, tenant_session):
    tenant, _owner, customer, entry, author = logged
    login(client, author.email)
    s = tenant_session(tenant)
    location_id = s.get(ContactLog, (tenant.id, entry.id)).location_id
    r = client.post(f"/customers/{customer.id}/contact-log/{entry.id}/edit",
                    data=_form(location_id=str(location_id)))
    assert r.status_code == 303
    s = tenant_session(tenant)
    assert s.get(ContactLog, (tenant.id, entry.id)).occurred_at == LOGGED_AT
    assert _audit(s) == []


def test_a_colleague_may_not_edit_someone_elses_entry(client, logged, add_member, tenant_session):
    tenant, _owner, customer, entry, _author = logged
    colleague = add_member(tenant, "staff")
    login(client, colleague.email)
    page = client.get(f"/customers/{customer.id}").text
    assert "Interested in a suite" in page  # everyone sees the history
    assert f"/contact-log/{entry.id}/edit" not in page
    url = f"/customers/{customer.id}/contact-log/{entry.id}/edit"
    assert client.get(url).status_code == 403
    assert client.post(url, data=_form(outcome="Rewritten")).status_code == 403
    s = tenant_session(tenant)
    assert s.get(ContactLog, (tenant.id, entry.id)).outcome == "Interested in a suite"
    assert _audit(s) == []


@pytest.mark.parametrize("role", ["manager", "owner"])
def test_managers_edit_any_entry(client, logged, add_member, write_session, tenant_session, role):
    tenant, owner, customer, entry, _author = logged
    # Also an entry nobody is named on (from an import or the API).
    s = write_session(tenant)
    orphan = ContactLog(customer_id=customer.id, channel="email", occurred_at=LOGGED_AT, outcome="Sent brochure")
    s.add(orphan)
    s.commit()
    boss = owner if role == "owner" else add_member(tenant, "manager")
    login(client, boss.email)
    page = client.get(f"/customers/{customer.id}").text
    assert f"/contact-log/{entry.id}/edit" in page and f"/contact-log/{orphan.id}/edit" in page
    for e in (entry, orphan):
        r = client.post(f"/customers/{customer.id}/contact-log/{e.id}/edit",
                        data=_form(channel="email", outcome=f"Checked by {role}"))
        assert r.status_code == 303
    s = tenant_session(tenant)
    assert {x.outcome for x in s.scalars(select(ContactLog))} == {f"Checked by {role}"}
    audits = _audit(s)
    assert len(audits) == 2 and {a.actor_user_id for a in audits} == {boss.id}


@pytest.mark.parametrize("overrides, message", [
    ({"channel": "fax"}, "Choose one of the listed values."),
    ({"occurred_at": ""}, "This field is required."),
    ({"occurred_at": "2999-01-01T10:00"}, "The time cannot be in the future."),
    ({"occurred_at": "soon"}, "Not a valid datetime value."),
    ({"outcome": "x" * 501}, "At most 500 characters."),
    ({"next_step": "<b>x</b>"}, "Use plain text"),
    ({"location_id": str(uuid.uuid4())}, "Choose one of the listed values."),
])
def test_bad_edit_is_refused_and_changes_nothing(client, logged, tenant_session, overrides, message):
    tenant, _owner, customer, entry, author = logged
    login(client, author.email)
    data = _form(outcome="Typed and kept", **{k: v for k, v in overrides.items() if k != "outcome"})
    if "outcome" in overrides:
        data["outcome"] = overrides["outcome"]
    r = client.post(f"/customers/{customer.id}/contact-log/{entry.id}/edit", data=data)
    assert r.status_code == 422 and message in r.text
    if "outcome" not in overrides:
        assert "Typed and kept" in r.text
    s = tenant_session(tenant)
    e = s.get(ContactLog, (tenant.id, entry.id))
    assert (e.channel, e.occurred_at, e.outcome) == ("call", LOGGED_AT, "Interested in a suite")
    assert _audit(s) == []


def test_an_entry_keeps_its_location_after_the_location_was_deactivated(client, logged, write_session,
                                                                       tenant_session):
    tenant, _owner, customer, entry, author = logged
    s = write_session(tenant)
    location = s.get(Location, (tenant.id, s.get(ContactLog, (tenant.id, entry.id)).location_id))
    location.active = False
    s.commit()
    login(client, author.email)
    form = client.get(f"/customers/{customer.id}/contact-log/{entry.id}/edit").text
    assert f'<option selected value="{location.id}">' in form or f'value="{location.id}" selected' in form
    r = client.post(f"/customers/{customer.id}/contact-log/{entry.id}/edit",
                    data=_form(location_id=str(location.id), outcome="Still there"))
    assert r.status_code == 303
    e = tenant_session(tenant).get(ContactLog, (tenant.id, entry.id))
    assert (e.location_id, e.outcome) == (location.id, "Still there")


def test_edit_from_the_page_with_csrf_in_chinese(client, app, logged, add_member, monkeypatch, tenant_session):
    tenant, _owner, customer, entry, _author = logged
    manager = add_member(tenant, "manager", language="zh_CN")
    monkeypatch.setitem(app.config, "WTF_CSRF_ENABLED", True)
    page = client.get("/login").text
    r = client.post("/login", data={"email": manager.email, "password": PASSWORD, "csrf_token": csrf_from(page)})
    assert r.status_code == 303
    detail = client.get(f"/customers/{customer.id}").text
    assert "编辑" in detail  # the Edit buttons speak the user's language
    form = client.get(f"/customers/{customer.id}/contact-log/{entry.id}/edit").text
    assert "保存修改" in form and "联系方式" in form
    url = f"/customers/{customer.id}/contact-log/{entry.id}/edit"
    assert client.post(url, data=_form(outcome="没有令牌")).status_code == 400
    r = client.post(url, data=_form(outcome="已预订套房", csrf_token=csrf_from(form)))
    assert r.status_code == 303
    assert tenant_session(tenant).get(ContactLog, (tenant.id, entry.id)).outcome == "已预订套房"


def test_erasure_empties_the_texts_of_edit_records(client, logged, write_session, tenant_session):
    tenant, owner, customer, entry, author = logged
    login(client, author.email)
    client.post(f"/customers/{customer.id}/contact-log/{entry.id}/edit", data=_form(outcome="Booked the suite"))
    s = write_session(tenant)
    records.erase_customer(s, customer.id, owner.id, clock.now_utc())
    s.commit()
    s = tenant_session(tenant)
    audit, = _audit(s)
    # Which fields changed stays, and the location; the free text goes.
    assert audit.details["changes"] == {"outcome": ["", ""], "location": ["main", ""]}
    erase, = _audit(s, "erase")
    assert erase.details["audit_texts_cleared"] == 1


# --- decision makers --------------------------------------------------------------------------

@pytest.fixture
def buyer(hotel, make_customer, write_session):
    tenant, owner = hotel
    customer = make_customer(tenant, name="Harbour Trading", company="Harbour Trading")
    s = write_session(tenant)
    contact = CustomerContact(customer_id=customer.id, name="刘强", role="采购经理", phone="+8613900000000")
    s.add(contact)
    s.commit()
    return tenant, owner, customer, contact


def test_staff_edit_a_decision_maker(client, buyer, add_member, tenant_session):
    tenant, _owner, customer, contact = buyer
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    url = f"/customers/{customer.id}/decision-makers/{contact.id}/edit"
    assert f'href="{url}"' in client.get(f"/customers/{customer.id}").text
    form = client.get(url)
    assert form.status_code == 200
    assert 'value="刘强"' in form.text and 'value="采购经理"' in form.text and 'value="139 0000 0000"' in form.text
    r = client.post(url, data={"name": "刘强 ", "role": "总经理", "phone": "139-1111-2222"})
    assert r.status_code == 303 and r.headers["Location"] == f"/customers/{customer.id}"
    page = client.get(r.headers["Location"]).text
    assert "Changes to 刘强 saved." in page and "总经理" in page and "139 1111 2222" in page
    c = tenant_session(tenant).get(CustomerContact, (tenant.id, contact.id))
    assert (c.name, c.role, c.phone) == ("刘强", "总经理", "+8613911112222")
    # Clearing the phone is fine: it is optional, as when adding.
    assert client.post(url, data={"name": "刘强", "role": "", "phone": ""}).status_code == 303
    c = tenant_session(tenant).get(CustomerContact, (tenant.id, contact.id))
    assert (c.role, c.phone) == ("", "")


@pytest.mark.parametrize("overrides, message", [
    ({"name": ""}, "This field is required."),
    ({"name": "x" * 121}, "At most 120 characters."),
    ({"role": "<i>boss</i>"}, "Use plain text"),
    ({"phone": "12"}, "Enter a phone number"),
    ({"phone": "call me"}, "Enter a phone number"),
])
def test_bad_decision_maker_edit_is_refused(client, buyer, tenant_session, overrides, message):
    tenant, owner, customer, contact = buyer
    login(client, owner.email)
    data = {"name": "Typed Name", "role": "Typed role", "phone": "139 2222 3333"}
    data.update(overrides)
    r = client.post(f"/customers/{customer.id}/decision-makers/{contact.id}/edit", data=data)
    assert r.status_code == 422 and message in r.text
    kept = [v for k, v in data.items() if k not in overrides]
    assert all(f'value="{v}"' in r.text for v in kept)
    c = tenant_session(tenant).get(CustomerContact, (tenant.id, contact.id))
    assert (c.name, c.role, c.phone) == ("刘强", "采购经理", "+8613900000000")


def test_edit_returns_to_the_guest_card_when_opened_there(client, buyer):
    tenant, owner, customer, contact = buyer
    login(client, owner.email)
    url = f"/customers/{customer.id}/decision-makers/{contact.id}/edit?return=card"
    assert f'action="{url}"' in client.get(url).text.replace("&amp;", "&")
    r = client.post(url, data={"name": "刘强", "role": "", "phone": ""})
    assert r.status_code == 303 and r.headers["Location"] == f"/frontdesk/{customer.id}"


# --- the tenant wall ----------------------------------------------------------------------------

def test_edits_answer_404_for_other_tenants_and_other_customers(client, logged, make_tenant, make_customer,
                                                                write_session, tenant_session):
    tenant, owner, customer, entry, _author = logged
    other, other_owner = make_tenant("bank")
    theirs = make_customer(other, name="Theirs", company="Theirs Co")
    s = write_session(other)
    their_log = ContactLog(customer_id=theirs.id, channel="call", occurred_at=LOGGED_AT, outcome="theirs",
                           staff_user_id=other_owner.id)
    their_contact = CustomerContact(customer_id=theirs.id, name="Their boss")
    s.add_all([their_log, their_contact])
    s.commit()
    sibling = make_customer(tenant, name="Another of mine")
    s = write_session(tenant)
    my_contact = CustomerContact(customer_id=customer.id, name="Mine")
    s.add(my_contact)
    s.commit()
    login(client, owner.email)
    urls = [
        f"/customers/{theirs.id}/contact-log/{their_log.id}/edit",
        f"/customers/{customer.id}/contact-log/{their_log.id}/edit",      # their entry under my customer
        f"/customers/{sibling.id}/contact-log/{entry.id}/edit",           # my entry under another customer
        f"/customers/{theirs.id}/decision-makers/{their_contact.id}/edit",
        f"/customers/{customer.id}/decision-makers/{their_contact.id}/edit",
        f"/customers/{sibling.id}/decision-makers/{my_contact.id}/edit",
    ]
    for url in urls:
        assert client.get(url).status_code == 404, url
        assert client.post(url, data={**_form(outcome="hijacked"), "name": "hijacked"}).status_code == 404, url
    s = tenant_session(other)
    assert s.get(ContactLog, (other.id, their_log.id)).outcome == "theirs"
    assert s.get(CustomerContact, (other.id, their_contact.id)).name == "Their boss"
    assert s.scalar(select(func.count()).select_from(AuditEntry)) == 0
    mine = tenant_session(tenant)
    assert mine.get(ContactLog, (tenant.id, entry.id)).outcome == "Interested in a suite"
    assert mine.get(CustomerContact, (tenant.id, my_contact.id)).name == "Mine"
    assert mine.get(Customer, (tenant.id, sibling.id)) is not None
