"""The customer archive: search, masking, create/edit with duplicate checks, transactions,
and the tenant wall on every customer route."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from saas import clock
from saas.customers.models import Customer, Transaction
from saas.settings.models import Department, Location, TransactionKind
from tests.conftest import login


@pytest.fixture
def make_customer(tenant_session):
    """make_customer(tenant, **fields) -> Customer, committed."""
    def factory(tenant, **fields):
        s = tenant_session(tenant)
        fields.setdefault("name", "Test Customer")
        c = Customer(**fields)
        s.add(c)
        s.commit()
        return c
    return factory


@pytest.fixture
def hotel(make_tenant):
    tenant, owner = make_tenant("hotel")
    return tenant, owner


def _ids(tenant_session, tenant):
    s = tenant_session(tenant)
    kind = s.scalar(select(TransactionKind).where(TransactionKind.is_default.is_(True)))
    location = s.scalar(select(Location))
    department = s.scalar(select(Department).order_by(Department.position))
    return kind, location, department


def _count(tenant_session, tenant, model):
    s = tenant_session(tenant)
    return s.scalar(select(func.count()).select_from(model))


# --- search -------------------------------------------------------------------------------

@pytest.fixture
def archive(hotel, make_customer):
    tenant, owner = hotel
    make_customer(tenant, name="王伟", address_as="王先生", phone="13812345678", card_number="VIP-0001")
    make_customer(tenant, name="王芳", address_as="王女士", phone="13900001111", external_ref="PMS-77")
    make_customer(tenant, name="Li Na", phone="18655554444", email="lina@example.com")
    make_customer(tenant, name="Harbour Trading Co.", phone="02166668888", card_number="C-9")
    return tenant, owner


def _names(html: str) -> set[str]:
    return {n for n in ("王伟", "王芳", "Li Na", "Harbour Trading Co.") if n in html}


@pytest.mark.parametrize("query, expected", [
    ("5678", {"王伟"}),                 # any part of the phone
    ("138 1234", {"王伟"}),             # typed with a space
    ("0000", {"王芳"}),
    ("王", {"王伟", "王芳"}),           # name prefix
    ("王芳", {"王芳"}),
    ("li", {"Li Na"}),                  # prefix, any case
    ("Na", set()),                      # not a prefix
    ("VIP-0001", {"王伟"}),             # card number
    ("PMS-77", {"王芳"}),               # external reference
    ("lina@example.com", {"Li Na"}),
    ("%", set()),                       # LIKE wildcards are plain characters
    ("", {"王伟", "王芳", "Li Na", "Harbour Trading Co."}),
])
def test_search(client, archive, query, expected):
    tenant, owner = archive
    login(client, owner.email)
    r = client.get("/customers", query_string={"q": query})
    assert r.status_code == 200
    assert _names(r.text) == expected


def test_odd_input_is_no_error(client, archive, tenant_session):
    tenant, owner = archive
    login(client, owner.email)
    for q in ("\x00", "王\x00", "'; drop table customers; --", "x" * 5000):
        assert client.get("/customers", query_string={"q": q}).status_code == 200
    r = client.post("/customers/new", data=_customer_form(name="陈\x00静", notes="a\x00b"))
    assert r.status_code == 303
    assert tenant_session(tenant).scalar(select(Customer).where(Customer.notes == "ab")).name == "陈静"


def test_search_htmx_returns_only_rows(client, archive):
    tenant, owner = archive
    login(client, owner.email)
    r = client.get("/customers?q=5678", headers={"HX-Request": "true"})
    assert r.status_code == 200
    assert "<html" not in r.text and "<table" in r.text
    assert _names(r.text) == {"王伟"}
    assert "HX-Request" in r.headers.get("Vary", "")
    # A boosted navigation (a link or the form's submit) gets the whole page.
    r = client.get("/customers?q=5678", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in r.text
    full = client.get("/customers")
    assert "<html" in full.text and 'hx-trigger="input changed delay:200ms, search"' in full.text
    assert 'id="customer-results"' in full.text


def test_search_paginates(client, hotel, tenant_session):
    tenant, owner = hotel
    s = tenant_session(tenant)
    s.add_all([Customer(name=f"Guest {i:03d}") for i in range(120)])
    s.commit()
    login(client, owner.email)
    r = client.get("/customers")
    assert "Guest 000" in r.text and "Guest 049" in r.text and "Guest 050" not in r.text
    assert "Page 1 of 3" in r.text
    r = client.get("/customers?page=3")
    assert "Guest 119" in r.text and "Guest 099" not in r.text
    for bad in ("abc", "-5", "999"):
        assert client.get(f"/customers?page={bad}").status_code == 200


def test_phone_masked_for_staff_full_for_manager_and_owner(client, archive, add_member):
    tenant, owner = archive
    staff = add_member(tenant, "staff")
    manager = add_member(tenant, "manager")
    login(client, staff.email)
    r = client.get("/customers")
    assert "138****5678" in r.text and "13812345678" not in r.text
    client.post("/logout")
    login(client, manager.email)
    assert "13812345678" in client.get("/customers").text
    client.post("/logout")
    login(client, owner.email)
    r = client.get("/customers")
    assert "13812345678" in r.text and "138****5678" not in r.text


# --- create and edit ----------------------------------------------------------------------

def _customer_form(**overrides):
    data = {"name": "陈静", "address_as": "陈女士", "phone": "137 0000 2222", "email": "chen@example.com",
            "external_ref": "", "card_number": "", "classification": "important", "location_id": "",
            "notes": "Prefers a quiet room"}
    data.update(overrides)
    return data


def test_create_customer(client, hotel, tenant_session):
    tenant, owner = hotel
    _kind, location, _dep = _ids(tenant_session, tenant)
    login(client, owner.email)
    assert client.get("/customers/new").status_code == 200
    r = client.post("/customers/new", data=_customer_form(location_id=str(location.id)))
    assert r.status_code == 303
    page = client.get(r.headers["Location"])
    assert page.status_code == 200
    assert "陈静" in page.text and "陈女士" in page.text and "Prefers a quiet room" in page.text
    assert "13700002222" in page.text and "Important" in page.text and "Main hotel" in page.text
    c = tenant_session(tenant).scalar(select(Customer))
    assert (c.phone, c.classification, c.location_id) == ("13700002222", "important", location.id)
    assert c.card_number is None and c.external_ref is None


@pytest.mark.parametrize("field, value, existing", [
    ("phone", "138-1234-5678", {"phone": "13812345678"}),
    ("email", "Wang@Example.com", {"email": "wang@example.com"}),
    ("external_ref", "PMS-1", {"external_ref": "PMS-1"}),
    ("card_number", "VIP-1", {"card_number": "VIP-1"}),
])
def test_create_with_duplicate_refused(client, hotel, make_customer, tenant_session, field, value, existing):
    tenant, owner = hotel
    other = make_customer(tenant, name="王伟", **existing)
    login(client, owner.email)
    r = client.post("/customers/new", data=_customer_form(**{field: value}))
    assert r.status_code == 422
    assert "already belongs to" in r.text
    assert f'<a href="/customers/{other.id}">王伟</a>' in r.text
    assert value in r.text and "陈静" in r.text  # what was typed is kept
    assert _count(tenant_session, tenant, Customer) == 1


def test_duplicate_named_together_with_other_errors(client, hotel, make_customer, tenant_session):
    tenant, owner = hotel
    other = make_customer(tenant, name="王伟", phone="13812345678", email="wang@example.com")
    login(client, owner.email)
    r = client.post("/customers/new", data=_customer_form(name="", phone="13812345678", email="wang@example.com"))
    assert r.status_code == 422
    assert "This field is required." in r.text
    assert f'This phone number already belongs to <a href="/customers/{other.id}">王伟</a>.' in r.text
    assert f'This email address already belongs to <a href="/customers/{other.id}">王伟</a>.' in r.text
    assert _count(tenant_session, tenant, Customer) == 1


def test_duplicate_name_is_escaped(client, hotel, tenant_session):
    tenant, owner = hotel
    s = tenant_session(tenant)
    s.add(Customer(name="<b>Bold</b>", phone="13812345678"))  # e.g. imported before the rule
    s.commit()
    login(client, owner.email)
    r = client.post("/customers/new", data=_customer_form(phone="13812345678"))
    assert r.status_code == 422
    assert "&lt;b&gt;Bold&lt;/b&gt;</a>" in r.text and "<b>Bold</b>" not in r.text


def test_duplicate_in_another_tenant_is_no_duplicate(client, hotel, make_tenant, make_customer, tenant_session):
    tenant, owner = hotel
    other_tenant, _ = make_tenant("bank")
    make_customer(other_tenant, name="Someone Else", phone="13812345678")
    login(client, owner.email)
    r = client.post("/customers/new", data=_customer_form(phone="13812345678"))
    assert r.status_code == 303
    assert _count(tenant_session, tenant, Customer) == 1


@pytest.mark.parametrize("overrides, message", [
    ({"name": ""}, "This field is required."),
    ({"name": "<script>x</script>"}, "Use plain text"),
    ({"address_as": "<b>王</b>"}, "Use plain text"),
    ({"phone": "call me"}, "Enter a phone number"),
    ({"email": "not-an-email"}, "Enter a valid email address."),
    ({"classification": "vip"}, "Choose one of the listed values."),
    ({"location_id": str(uuid.uuid4())}, "Choose one of the listed values."),
    ({"name": "x" * 121}, "At most 120 characters."),
])
def test_create_invalid_refused(client, hotel, tenant_session, overrides, message):
    tenant, owner = hotel
    login(client, owner.email)
    r = client.post("/customers/new", data=_customer_form(**overrides))
    assert r.status_code == 422
    assert message in r.text
    assert _count(tenant_session, tenant, Customer) == 0


def test_location_of_another_tenant_refused(client, hotel, make_tenant, tenant_session):
    tenant, owner = hotel
    other, _ = make_tenant("dealership")
    _k, foreign_location, _d = _ids(tenant_session, other)
    login(client, owner.email)
    r = client.post("/customers/new", data=_customer_form(location_id=str(foreign_location.id)))
    assert r.status_code == 422
    assert _count(tenant_session, tenant, Customer) == 0


def test_edit_customer(client, hotel, make_customer, tenant_session):
    tenant, owner = hotel
    c = make_customer(tenant, name="王伟", phone="13812345678", card_number="VIP-1")
    make_customer(tenant, name="李娜", phone="13900000000")
    login(client, owner.email)
    r = client.get(f"/customers/{c.id}/edit")
    assert r.status_code == 200 and "13812345678" in r.text and "VIP-1" in r.text
    # Keeping its own phone is fine; taking another customer's is not.
    r = client.post(f"/customers/{c.id}/edit", data=_customer_form(name="王伟", phone="13812345678",
                                                                    card_number="VIP-1", address_as="王总"))
    assert r.status_code == 303
    r = client.post(f"/customers/{c.id}/edit", data=_customer_form(name="王伟伟", phone="13900000000"))
    assert r.status_code == 422 and "李娜" in r.text and "王伟伟" in r.text
    s = tenant_session(tenant)
    saved = s.get(Customer, (tenant.id, c.id))
    assert (saved.name, saved.address_as, saved.phone) == ("王伟", "王总", "13812345678")


def test_staff_can_create_and_record(client, hotel, add_member, tenant_session):
    tenant, _owner = hotel
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    r = client.post("/customers/new", data=_customer_form())
    assert r.status_code == 303


# --- transactions -------------------------------------------------------------------------

def _tx_form(kind, **overrides):
    data = {"kind_id": str(kind.id), "occurred_on": "2025-03-01", "amount": "1280.50", "quantity": "2",
            "location_id": "", "department_id": "", "note": "Sea view"}
    data.update(overrides)
    return data


def test_transaction_form_defaults(client, hotel, make_customer, tenant_session):
    tenant, owner = hotel
    kind, location, _d = _ids(tenant_session, tenant)
    c = make_customer(tenant)
    login(client, owner.email)
    r = client.get(f"/customers/{c.id}/transactions/new")
    assert r.status_code == 200
    assert f'<option selected value="{kind.id}">' in r.text
    assert f'value="{clock.today(tenant.timezone).isoformat()}"' in r.text
    assert f'<option selected value="{location.id}">' in r.text  # the only location


def test_record_transaction_and_totals(client, hotel, make_customer, tenant_session):
    tenant, owner = hotel
    kind, location, department = _ids(tenant_session, tenant)
    c = make_customer(tenant, name="王伟", address_as="王先生")
    login(client, owner.email)
    r = client.post(f"/customers/{c.id}/transactions/new",
                    data=_tx_form(kind, location_id=str(location.id), department_id=str(department.id)))
    assert r.status_code == 303
    r = client.post(f"/customers/{c.id}/transactions/new", data=_tx_form(kind, amount="0.10", occurred_on="2025-04-02",
                                                                          note="Minibar", quantity="1"))
    assert r.status_code == 303
    s = tenant_session(tenant)
    txs = list(s.scalars(select(Transaction).order_by(Transaction.occurred_on)))
    assert [t.amount for t in txs] == [Decimal("1280.50"), Decimal("0.10")]
    assert all(isinstance(t.amount, Decimal) for t in txs)
    assert txs[0].staff_user_id == owner.id and txs[0].quantity == 2
    assert txs[0].location_id == location.id and txs[0].department_id == department.id
    page = client.get(f"/customers/{c.id}")
    assert page.status_code == 200
    assert "王先生" in page.text
    assert "2 transactions" in page.text
    assert "CN¥1,280.60" in page.text  # the total, Decimal exact
    assert "CN¥1,280.50" in page.text and "Sea view" in page.text and "Front office" in page.text
    assert page.text.index("Minibar") < page.text.index("Sea view")  # newest first


@pytest.mark.parametrize("overrides, field_message", [
    ({"amount": "abc"}, "Enter an amount such as 120 or 120.50."),
    ({"amount": "-1"}, "The amount cannot be negative."),
    ({"amount": "1.234"}, "Use at most 2 decimal places."),
    ({"amount": "1e3"}, "Enter an amount such as 120 or 120.50."),
    ({"amount": "NaN"}, "Enter an amount such as 120 or 120.50."),
    ({"amount": "1234567890123"}, "Use at most 12 digits."),
    ({"amount": ""}, "This field is required."),
    ({"quantity": "0"}, "Enter a whole number from 1 to 100000."),
    ({"quantity": "1.5"}, "Enter a whole number from 1 to 100000."),
    ({"occurred_on": "yesterday"}, "Not a valid date value."),
    ({"occurred_on": ""}, "This field is required."),
    ({"occurred_on": "2999-01-01"}, "The date cannot be in the future."),
    ({"kind_id": str(uuid.uuid4())}, "Choose one of the listed values."),
    ({"department_id": "nonsense"}, "Choose one of the listed values."),
    ({"note": "x" * 256}, "At most 255 characters."),
])
def test_bad_transaction_refused(client, hotel, make_customer, tenant_session, overrides, field_message):
    tenant, owner = hotel
    kind, _l, _d = _ids(tenant_session, tenant)
    c = make_customer(tenant)
    login(client, owner.email)
    r = client.post(f"/customers/{c.id}/transactions/new", data=_tx_form(kind, **overrides))
    assert r.status_code == 422
    assert field_message in r.text
    assert _count(tenant_session, tenant, Transaction) == 0


def test_amount_kept_when_refused(client, hotel, make_customer, tenant_session):
    tenant, owner = hotel
    kind, _l, _d = _ids(tenant_session, tenant)
    c = make_customer(tenant)
    login(client, owner.email)
    r = client.post(f"/customers/{c.id}/transactions/new", data=_tx_form(kind, amount="1.234", note="Keep me"))
    assert r.status_code == 422
    assert 'value="1.234"' in r.text and 'value="Keep me"' in r.text


def test_inactive_kind_refused(client, hotel, make_customer, tenant_session):
    tenant, owner = hotel
    s = tenant_session(tenant)
    banquet = s.scalar(select(TransactionKind).where(TransactionKind.code == "banquet"))
    banquet.active = False
    s.commit()
    c = make_customer(tenant)
    login(client, owner.email)
    r = client.post(f"/customers/{c.id}/transactions/new", data=_tx_form(banquet))
    assert r.status_code == 422
    assert _count(tenant_session, tenant, Transaction) == 0


# --- the tenant wall ------------------------------------------------------------------------

def test_another_tenants_customer_is_not_found(client, hotel, make_tenant, make_customer, tenant_session):
    tenant, owner = hotel
    other, _ = make_tenant("bank")
    foreign = make_customer(other, name="Foreign Customer", phone="13512345678")
    kind, _loc, _dep = _ids(tenant_session, tenant)
    login(client, owner.email)
    for url in (f"/customers/{foreign.id}", f"/customers/{foreign.id}/edit",
                f"/customers/{foreign.id}/transactions/new", f"/customers/{uuid.uuid4()}"):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/customers/{foreign.id}/edit", data=_customer_form()).status_code == 404
    assert client.post(f"/customers/{foreign.id}/transactions/new", data=_tx_form(kind)).status_code == 404
    r = client.get("/customers?q=13512345678")
    assert "Foreign Customer" not in r.text
    s = tenant_session(other)
    assert s.get(Customer, (other.id, foreign.id)).name == "Foreign Customer"
    assert _count(tenant_session, other, Transaction) == 0


def test_customer_pages_need_login(client, hotel, make_customer):
    tenant, _owner = hotel
    c = make_customer(tenant)
    for url in ("/customers", "/customers/new", f"/customers/{c.id}", f"/customers/{c.id}/edit",
                f"/customers/{c.id}/transactions/new"):
        r = client.get(url)
        assert r.status_code == 302 and "/login" in r.headers["Location"], url


def test_future_check_uses_tenant_day(client, hotel, make_customer, tenant_session):
    tenant, owner = hotel
    kind, _l, _d = _ids(tenant_session, tenant)
    c = make_customer(tenant)
    login(client, owner.email)
    today = clock.today(tenant.timezone)
    r = client.post(f"/customers/{c.id}/transactions/new", data=_tx_form(kind, occurred_on=today.isoformat()))
    assert r.status_code == 303
    tomorrow = today + dt.timedelta(days=1)
    r = client.post(f"/customers/{c.id}/transactions/new", data=_tx_form(kind, occurred_on=tomorrow.isoformat()))
    assert r.status_code == 422
