"""The front desk: one search box, the guest card (partial and full page), its badges
and empty states, and the buttons that return to the card."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

from saas.customers.models import Customer, Preference, Transaction
from saas.customers.services import birthday_this_week
from saas.settings.models import Location, TransactionKind
from tests.conftest import login


# --- birthday this week: the calendar week (Monday to Sunday) of as_of --------------------

WEDNESDAY = dt.date(2026, 3, 18)  # week of Monday 16 to Sunday 22 March 2026


@pytest.mark.parametrize("birthday, as_of, expected", [
    (dt.date(1980, 3, 18), WEDNESDAY, True),           # today
    (dt.date(1980, 3, 16), WEDNESDAY, True),           # Monday of the week
    (dt.date(1980, 3, 22), WEDNESDAY, True),           # Sunday of the week
    (dt.date(1980, 3, 15), WEDNESDAY, False),          # the Sunday before
    (dt.date(1980, 3, 23), WEDNESDAY, False),          # the Monday after
    (dt.date(1980, 3, 16), dt.date(2026, 3, 16), True),  # as_of on the Monday
    (dt.date(1980, 3, 22), dt.date(2026, 3, 22), True),  # as_of on the Sunday
    (dt.date(1980, 3, 23), dt.date(2026, 3, 22), False),
    (dt.date(1990, 1, 2), dt.date(2025, 12, 31), True),   # a week across the new year
    (dt.date(1990, 12, 29), dt.date(2026, 1, 2), True),
    (dt.date(1990, 12, 28), dt.date(2026, 1, 2), False),
    (dt.date(1988, 2, 29), dt.date(2026, 2, 27), True),   # 29 February: the 28th in 2026
    (dt.date(1988, 2, 29), dt.date(2026, 3, 2), False),
    (dt.date(1988, 2, 29), dt.date(2028, 3, 1), True),    # a leap year has the day itself
    (None, WEDNESDAY, False),
])
def test_birthday_this_week(birthday, as_of, expected):
    assert birthday_this_week(birthday, as_of) is expected


# --- the front desk ---------------------------------------------------------------------

@pytest.fixture
def guest(hotel, make_customer, tenant_session):
    tenant, owner = hotel
    c = make_customer(tenant, name="王伟", address_as="王先生", phone="+8613800138000", card_number="VIP-0001",
                      plate_number="沪A12345", classification="important", consent_sms=True)
    return tenant, owner, c


def test_frontdesk_page_and_search_partial(client, guest, add_member):
    tenant, _owner, c = guest
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    page = client.get("/frontdesk")
    assert page.status_code == 200
    assert 'hx-trigger="input changed delay:200ms, search"' in page.text and "autofocus" in page.text
    assert 'href="/frontdesk"' in page.text  # in the nav for staff
    assert 'href="/frontdesk"' in client.get("/dashboard").text or "/frontdesk" in client.get("/dashboard").text
    for q in ("13800", "0138", "王", "VIP-0001", "沪a12345"):
        r = client.get("/frontdesk", query_string={"q": q}, headers={"HX-Request": "true"})
        assert r.status_code == 200 and "<html" not in r.text, q
        assert f'href="/frontdesk/{c.id}"' in r.text and "王先生" in r.text, q
        assert "138****8000" in r.text  # staff see the number masked
    r = client.get("/frontdesk", query_string={"q": "99999"}, headers={"HX-Request": "true"})
    assert "No customer matches" in r.text
    # Without JavaScript the same search gives the whole page.
    r = client.get("/frontdesk", query_string={"q": "13800"})
    assert "<html" in r.text and f'href="/frontdesk/{c.id}"' in r.text


def test_guest_card_partial_and_full_page(client, guest, tenant_session, add_member):
    tenant, _owner, c = guest
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    full = client.get(f"/frontdesk/{c.id}")
    assert full.status_code == 200 and "<html" in full.text and "frontdesk.css" in full.text
    part = client.get(f"/frontdesk/{c.id}", headers={"HX-Request": "true"})
    assert part.status_code == 200 and "<html" not in part.text and 'class="guest-card"' in part.text
    assert "HX-Request" in part.headers["Vary"]
    boosted = client.get(f"/frontdesk/{c.id}", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in boosted.text
    for text in ("王先生", "Important customer", "Member", "Redeem points", "No open complaints",
                 "No visits recorded yet", "No preferences recorded yet", "Record visit", "Add preference",
                 "Log contact"):
        assert text in part.text, text
    assert "Birthday this week" not in part.text


def test_guest_card_shows_preferences_last_visit_and_birthday(client, guest, tenant_session):
    tenant, owner, c = guest
    s = tenant_session(tenant)
    customer = s.get(Customer, (tenant.id, c.id))
    customer.birthday = dt.date(1980, 1, 1)
    from saas import clock
    today = clock.today(tenant.timezone)
    customer.birthday = today.replace(year=1980) if (today.month, today.day) != (2, 29) else dt.date(1980, 2, 28)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    s.add_all([Preference(customer_id=c.id, category="room", key=f"key{i}", value=f"value{i}",
                          recorded_at=base + dt.timedelta(hours=i)) for i in range(8)])
    kind = s.scalar(select(TransactionKind).where(TransactionKind.is_default.is_(True)))
    location = s.scalar(select(Location))
    s.add_all([
        Transaction(customer_id=c.id, kind_id=kind.id, occurred_on=dt.date(2025, 5, 1), amount=Decimal("10.00")),
        Transaction(customer_id=c.id, kind_id=kind.id, occurred_on=dt.date(2025, 9, 30), amount=Decimal("1280.50"),
                    location_id=location.id),
    ])
    s.commit()
    login(client, owner.email)
    r = client.get(f"/frontdesk/{c.id}", headers={"HX-Request": "true"})
    assert "Birthday this week" in r.text
    # The latest 6 preferences, newest first, and a link to the rest.
    assert "value7" in r.text and "value2" in r.text and "value1" not in r.text and "value0" not in r.text
    assert r.text.index("value7") < r.text.index("value2")
    assert "+2 more" in r.text and f'href="/customers/{c.id}#preferences"' in r.text
    assert "Sep 30, 2025" in r.text and "Main hotel" in r.text and "CN¥1,280.50" in r.text
    assert "CN¥10.00" not in r.text
    assert "138 0013 8000" in r.text  # the owner sees the whole number
    # A reversed (refunded or cancelled) visit did not happen: the one before is the last.
    latest = s.scalar(select(Transaction).where(Transaction.amount == Decimal("1280.50")))
    latest.reversed_on = dt.date(2025, 10, 1)
    s.commit()
    r = client.get(f"/frontdesk/{c.id}", headers={"HX-Request": "true"})
    assert "May 1, 2025" in r.text and "CN¥10.00" in r.text and "CN¥1,280.50" not in r.text


def test_buttons_return_to_the_card(client, guest, tenant_session):
    tenant, owner, c = guest
    kind = tenant_session(tenant).scalar(select(TransactionKind).where(TransactionKind.is_default.is_(True)))
    login(client, owner.email)
    card = client.get(f"/frontdesk/{c.id}").text
    for href in (f"/customers/{c.id}/transactions/new?return=card", f"/customers/{c.id}/preferences/new?return=card",
                 f"/customers/{c.id}/contact-log/new?return=card"):
        assert f'href="{href}"' in card, href
        form = client.get(href)
        assert form.status_code == 200 and f'action="{href}"' in form.text, href
    r = client.post(f"/customers/{c.id}/preferences/new?return=card",
                    data={"category": "food", "key": "Tea", "value": "Pu'er", "location_id": ""})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/frontdesk/{c.id}")
    r = client.post(f"/customers/{c.id}/contact-log/new?return=card",
                    data={"channel": "visit", "occurred_at": "", "outcome": "Checked in", "next_step": "",
                          "location_id": ""})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/frontdesk/{c.id}")
    r = client.post(f"/customers/{c.id}/transactions/new?return=card",
                    data={"kind_id": str(kind.id), "occurred_on": "2025-03-01", "amount": "88", "quantity": "1",
                          "location_id": "", "department_id": "", "note": ""})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/frontdesk/{c.id}")
    card = client.get(f"/frontdesk/{c.id}").text
    assert "Pu&#39;er" in card and "CN¥88.00" in card
    # Bad input on the card's form: 422, the value kept, and still on the way back to the card.
    r = client.post(f"/customers/{c.id}/preferences/new?return=card",
                    data={"category": "food", "key": "", "value": "Keep me", "location_id": ""})
    assert r.status_code == 422 and 'value="Keep me"' in r.text
    assert f'action="/customers/{c.id}/preferences/new?return=card"' in r.text
    # Only "card" is a place to return to (no open redirect).
    r = client.post(f"/customers/{c.id}/preferences/new?return=https://evil.example",
                    data={"category": "food", "key": "Tea", "value": "Green", "location_id": ""})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/customers/{c.id}")


def test_guest_card_of_another_tenant_is_not_found(client, guest, make_tenant):
    _tenant, _owner, c = guest
    _other, stranger = make_tenant("bank")
    login(client, stranger.email)
    assert client.get(f"/frontdesk/{c.id}").status_code == 404
    assert client.get(f"/frontdesk/{c.id}", headers={"HX-Request": "true"}).status_code == 404
    r = client.get("/frontdesk", query_string={"q": "13800"}, headers={"HX-Request": "true"})
    assert "王先生" not in r.text


def test_frontdesk_needs_login(client, guest):
    _tenant, _owner, c = guest
    for url in ("/frontdesk", f"/frontdesk/{c.id}"):
        r = client.get(url)
        assert r.status_code == 302 and "/login" in r.headers["Location"]
