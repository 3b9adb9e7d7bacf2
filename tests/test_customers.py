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
    assert "137 0000 2222" in page.text and "Important" in page.text and "Main hotel" in page.text
    c = tenant_session(tenant).scalar(select(Customer))
    # Phones are stored in E.164, read with the tenant's country (CN).
    assert (c.phone, c.classification, c.location_id) == ("+8613700002222", "important", location.id)
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
    # Saving normalises a phone stored before phones were E.164.
    assert (saved.name, saved.address_as, saved.phone) == ("王伟", "王总", "+8613812345678")


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


# --- the full profile (issue 3) -------------------------------------------------------------

from saas.customers.models import ContactLog, CustomerContact, Preference  # noqa: E402


def _profile_form(**overrides):
    data = _customer_form(
        phone="138 0013 8000", phone_alt="+44 20 7946 0958", email="Chen@Example.COM", birthday="1985-06-01",
        gender="female", company="Harbour Trading", job_title="采购总监", company_industry="Logistics",
        company_size="50-249", plate_number="沪a 12345", consent_phone="y", consent_email="y",
        tags="VIP, 安静 ,vip,  late checkout", owner_user_id="")
    data.update(overrides)
    return data


def test_create_full_profile(client, hotel, tenant_session, add_member):
    tenant, owner = hotel
    manager = add_member(tenant, "manager")
    login(client, owner.email)
    r = client.post("/customers/new", data=_profile_form(owner_user_id=str(manager.id)))
    assert r.status_code == 303, r.text
    c = tenant_session(tenant).scalar(select(Customer))
    assert c.phone == "+8613800138000" and c.phone_alt == "+442079460958"
    assert c.email == "chen@example.com" and c.birthday == dt.date(1985, 6, 1) and c.gender == "female"
    assert (c.company, c.job_title, c.company_industry, c.company_size) == (
        "Harbour Trading", "采购总监", "Logistics", "50-249")
    assert c.plate_number == "沪A12345"
    assert (c.consent_phone, c.consent_sms, c.consent_email) == (True, False, True)
    assert c.tags == ["VIP", "安静", "late checkout"]
    assert c.owner_user_id == manager.id
    page = client.get(f"/customers/{c.id}").text
    for text in ("138 0013 8000", 'href="tel:+8613800138000"', "+44 20 7946 0958", "沪A12345", "Harbour Trading",
                 "late checkout", manager.name, "50–249 people"):
        assert text in page, text
    # The edit form shows what was saved, tags as typed text.
    edit = client.get(f"/customers/{c.id}/edit").text
    assert 'value="VIP, 安静, late checkout"' in edit and 'value="138 0013 8000"' in edit
    r = client.post(f"/customers/{c.id}/edit", data=_profile_form(tags="", consent_phone="", consent_email="",
                                                                   owner_user_id=str(manager.id)))
    assert r.status_code == 303
    s = tenant_session(tenant)
    c = s.get(Customer, (tenant.id, c.id))
    assert c.tags == [] and not c.consent_phone and not c.consent_email and c.phone == "+8613800138000"


@pytest.mark.parametrize("typed", ["138 0013 8000", "138-0013-8000", "+86 138 0013 8000", "0086 13800138000",
                                   "(138) 0013.8000"])
def test_phone_normalised_to_e164(client, hotel, tenant_session, typed):
    tenant, owner = hotel
    login(client, owner.email)
    assert client.post("/customers/new", data=_customer_form(phone=typed)).status_code == 303
    assert tenant_session(tenant).scalar(select(Customer.phone)) == "+8613800138000"


def test_phone_read_with_tenant_country(client, make_tenant, tenant_session, app):
    tenant, owner = make_tenant("hotel")
    s = app.extensions["huitou_db"].new_session()
    from saas.auth.models import Tenant
    s.get(Tenant, tenant.id).country = "GB"
    s.commit()
    s.close()
    login(client, owner.email)
    assert client.post("/customers/new", data=_customer_form(phone="020 7946 0958")).status_code == 303
    assert tenant_session(tenant).scalar(select(Customer.phone)) == "+442079460958"


@pytest.mark.parametrize("overrides, field, message", [
    ({"phone": "12345"}, "phone", "Enter a phone number such as 138 0013 8000"),
    ({"phone": "call me"}, "phone", "Enter a phone number such as 138 0013 8000"),
    ({"phone_alt": "138 0013 800"}, "phone_alt", "Enter a phone number such as 138 0013 8000"),
    ({"birthday": "2999-01-01"}, "birthday", "The birthday cannot be in the future."),
    ({"birthday": "yesterday"}, "birthday", "Not a valid date value."),
    ({"gender": "robot"}, "gender", "Choose one of the listed values."),
    ({"company_size": "huge"}, "company_size", "Choose one of the listed values."),
    ({"tags": ",".join(f"t{i}" for i in range(11))}, "tags", "At most 10 tags."),
    ({"tags": "x" * 31}, "tags", "A tag has at most 30 characters."),
    ({"tags": "<b>vip</b>"}, "tags", "Use plain text"),
    ({"plate_number": "x" * 21}, "plate_number", "At most 20 characters."),
    ({"company": "<i>Co</i>"}, "company", "Use plain text"),
    ({"owner_user_id": str(uuid.uuid4())}, "owner_user_id", "Choose one of the listed values."),
])
def test_bad_profile_refused_and_kept(client, hotel, tenant_session, overrides, field, message):
    tenant, owner = hotel
    login(client, owner.email)
    r = client.post("/customers/new", data=_profile_form(**overrides))
    assert r.status_code == 422
    assert message in r.text
    assert 'value="采购总监"' in r.text and 'value="陈静"' in r.text  # typed values kept
    assert f'id="{field}-errors"' in r.text
    assert _count(tenant_session, tenant, Customer) == 0


def test_bad_profile_refused_by_the_service_too(hotel, tenant_session, app):
    """The API calls the same service: it refuses what the form refuses."""
    from saas.customers import services
    from saas.errors import ValidationFailed

    tenant, _owner = hotel
    s = app.extensions["huitou_db"].new_session()
    from saas.db import bind_tenant
    bind_tenant(s, tenant.id)
    try:
        with pytest.raises(ValidationFailed) as exc:
            services.create_customer(s, {"name": "X", "phone": "12", "birthday": "2999-01-01",
                                         "tags": ["a"] * 1 + [f"t{i}" for i in range(10)]},
                                     as_of=dt.date(2026, 1, 1))
        assert set(exc.value.errors) == {"phone", "birthday", "tags"}
        c = services.create_customer(s, {"name": "Y", "phone": "13800138000", "tags": ["a", " a ", "b"]},
                                     as_of=dt.date(2026, 1, 1))
        assert c.phone == "+8613800138000" and c.tags == ["a", "b"]
        # An edit with only some fields keeps the others.
        services.update_customer(s, c, {"email": "Y@Example.com"}, as_of=dt.date(2026, 1, 1))
        assert (c.name, c.phone, c.email, c.tags) == ("Y", "+8613800138000", "y@example.com", ["a", "b"])
    finally:
        s.rollback()
        s.close()


def test_owner_select_lists_only_active_members_of_the_tenant(client, hotel, make_tenant, add_member, tenant_session):
    tenant, owner = hotel
    staff = add_member(tenant, "staff")
    gone = add_member(tenant, "staff")
    s = tenant_session(tenant)
    from saas.auth.models import Membership
    s.scalar(select(Membership).where(Membership.user_id == gone.id)).active = False
    s.commit()
    other_tenant, stranger = make_tenant("bank")
    login(client, owner.email)
    page = client.get("/customers/new").text
    assert f'value="{staff.id}"' in page and f'value="{owner.id}"' in page
    assert f'value="{gone.id}"' not in page and f'value="{stranger.id}"' not in page
    for bad in (gone.id, stranger.id):
        r = client.post("/customers/new", data=_customer_form(owner_user_id=str(bad)))
        assert r.status_code == 422 and "Choose one of the listed values." in r.text
    assert _count(tenant_session, tenant, Customer) == 0
    r = client.post("/customers/new", data=_customer_form(owner_user_id=str(staff.id)))
    assert r.status_code == 303


def test_deactivated_owner_is_kept_on_edit(client, hotel, add_member, make_customer, tenant_session):
    tenant, owner = hotel
    staff = add_member(tenant, "staff")
    c = make_customer(tenant, name="王伟", owner_user_id=staff.id)
    s = tenant_session(tenant)
    from saas.auth.models import Membership
    s.scalar(select(Membership).where(Membership.user_id == staff.id)).active = False
    s.commit()
    login(client, owner.email)
    assert f'<option selected value="{staff.id}">' in client.get(f"/customers/{c.id}/edit").text
    r = client.post(f"/customers/{c.id}/edit", data=_customer_form(name="王伟", owner_user_id=str(staff.id)))
    assert r.status_code == 303


@pytest.mark.parametrize("stored, typed", [
    ("+8613812345678", "138 1234 5678"),   # E.164 against E.164
    ("13812345678", "+86 138-1234-5678"),  # saved before phones were normalised
    ("02166668888", "021 6666 8888"),
])
def test_duplicate_phone_in_any_format(client, hotel, make_customer, tenant_session, stored, typed):
    tenant, owner = hotel
    other = make_customer(tenant, name="王伟", phone=stored)
    login(client, owner.email)
    r = client.post("/customers/new", data=_customer_form(phone=typed))
    assert r.status_code == 422
    assert f'This phone number already belongs to <a href="/customers/{other.id}">王伟</a>.' in r.text
    # The other number of a customer counts too.
    r = client.post("/customers/new", data=_customer_form(phone="13900000000", phone_alt=typed))
    assert r.status_code == 422 and "already belongs to" in r.text
    assert _count(tenant_session, tenant, Customer) == 1


@pytest.mark.parametrize("query, expected", [
    ("13800", {"王伟"}),
    ("0138", {"王伟"}),
    ("138 0013", {"王伟"}),
    ("+86138", {"王伟"}),
    ("021 6666", {"Harbour"}),              # a landline typed with its trunk prefix
    ("7946", {"Li Na"}),                    # the other phone
    ("沪a12345", {"王伟"}),                  # plate: any case
    ("沪A 12345", {"王伟"}),                 # plate: with a space
    ("沪A123", {"王伟"}),                    # plate: its start
    ("京B", set()),
])
def test_search_phone_digits_and_plate(client, hotel, make_customer, query, expected):
    tenant, owner = hotel
    make_customer(tenant, name="王伟", phone="+8613800138000", plate_number="沪A12345")
    make_customer(tenant, name="Harbour", phone="+862166668888")
    make_customer(tenant, name="Li Na", phone="+8618655554444", phone_alt="+442079460958")
    login(client, owner.email)
    r = client.get("/customers", query_string={"q": query})
    found = {n for n in ("王伟", "Harbour", "Li Na") if f">{n}</a>" in r.text}
    assert found == expected


def test_staff_sees_e164_phone_masked_in_lists(client, hotel, add_member, make_customer):
    tenant, _owner = hotel
    make_customer(tenant, name="王伟", phone="+8613812345678")
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    r = client.get("/customers")
    assert "138****5678" in r.text and "13812345678" not in r.text and "1234 5678" not in r.text


# --- decision makers ------------------------------------------------------------------------

def test_decision_makers_add_and_remove(client, hotel, make_customer, tenant_session):
    tenant, owner = hotel
    c = make_customer(tenant, name="Harbour Trading", company="Harbour Trading")
    login(client, owner.email)
    page = client.get(f"/customers/{c.id}").text
    assert "Key decision makers" in page and "No decision makers recorded yet." in page
    r = client.post(f"/customers/{c.id}/decision-makers/new",
                    data={"name": "刘强", "role": "采购经理", "phone": "139 0000 0000"})
    assert r.status_code == 303
    contact = tenant_session(tenant).scalar(select(CustomerContact))
    assert (contact.name, contact.role, contact.phone) == ("刘强", "采购经理", "+8613900000000")
    page = client.get(f"/customers/{c.id}").text
    assert "刘强" in page and "采购经理" in page and "139 0000 0000" in page
    r = client.post(f"/customers/{c.id}/decision-makers/new", data={"name": "", "role": "CEO", "phone": "12"})
    assert r.status_code == 422
    assert "This field is required." in r.text and "Enter a phone number" in r.text and 'value="CEO"' in r.text
    assert _count(tenant_session, tenant, CustomerContact) == 1
    r = client.post(f"/customers/{c.id}/decision-makers/{contact.id}/delete")
    assert r.status_code == 303
    assert _count(tenant_session, tenant, CustomerContact) == 0


# --- preferences and the contact log --------------------------------------------------------

def test_preferences_shared_across_locations(client, hotel, make_customer, add_member, tenant_session):
    tenant, owner = hotel
    s = tenant_session(tenant)
    s.add(Location(code="airport", name_zh="机场店", name_en="Airport hotel", position=9))
    s.commit()
    main, airport = (s.scalar(select(Location).where(Location.code != "airport")),
                     s.scalar(select(Location).where(Location.code == "airport")))
    c = make_customer(tenant, name="王伟", location_id=main.id)
    front = add_member(tenant, "staff")
    other_front = add_member(tenant, "staff")
    login(client, front.email)
    r = client.post(f"/customers/{c.id}/preferences/new",
                    data={"category": "room", "key": "Lotion", "value": "Lavender, in the bathroom",
                          "location_id": str(main.id)})
    assert r.status_code == 303
    pref = tenant_session(tenant).scalar(select(Preference))
    assert (pref.category, pref.key, pref.recorded_by_id, pref.location_id) == ("room", "Lotion", front.id, main.id)
    client.post("/logout")
    # A colleague at another property sees it, with who recorded it, where and when.
    login(client, other_front.email)
    page = client.get(f"/customers/{c.id}").text
    assert "Lavender, in the bathroom" in page
    assert f"Recorded by {front.name} at Main hotel" in page
    r = client.post(f"/customers/{c.id}/preferences/new",
                    data={"category": "food", "key": "Breakfast", "value": "Congee", "location_id": str(airport.id)})
    assert r.status_code == 303
    page = client.get(f"/customers/{c.id}").text
    assert page.index("Congee") < page.index("Lavender")  # latest first
    # Removed by anyone on the staff.
    r = client.post(f"/customers/{c.id}/preferences/{pref.id}/delete")
    assert r.status_code == 303
    assert "Lavender" not in client.get(f"/customers/{c.id}").text
    assert _count(tenant_session, tenant, Preference) == 1


@pytest.mark.parametrize("overrides, message", [
    ({"category": "weather"}, "Choose one of the listed values."),
    ({"key": ""}, "This field is required."),
    ({"value": ""}, "This field is required."),
    ({"value": "x" * 256}, "At most 255 characters."),
    ({"value": "<script>"}, "Use plain text"),
    ({"location_id": str(uuid.uuid4())}, "Choose one of the listed values."),
])
def test_bad_preference_refused(client, hotel, make_customer, tenant_session, overrides, message):
    tenant, owner = hotel
    c = make_customer(tenant)
    login(client, owner.email)
    data = {"category": "room", "key": "Pillow", "value": "Firm", "location_id": ""}
    data.update(overrides)
    r = client.post(f"/customers/{c.id}/preferences/new", data=data)
    assert r.status_code == 422 and message in r.text
    assert 'value="Pillow"' in r.text or overrides.get("key") == ""
    assert _count(tenant_session, tenant, Preference) == 0


def test_contact_log(client, hotel, make_customer, add_member, tenant_session):
    tenant, _owner = hotel
    c = make_customer(tenant, name="王伟")
    sales = add_member(tenant, "staff")
    colleague = add_member(tenant, "staff")
    login(client, sales.email)
    form = client.get(f"/customers/{c.id}/contact-log/new").text
    assert 'type="datetime-local"' in form
    r = client.post(f"/customers/{c.id}/contact-log/new",
                    data={"channel": "call", "occurred_at": "2025-03-01T14:30", "outcome": "Interested in a suite",
                          "next_step": "Send the offer", "location_id": ""})
    assert r.status_code == 303
    r = client.post(f"/customers/{c.id}/contact-log/new",
                    data={"channel": "visit", "occurred_at": "", "outcome": "", "next_step": "", "location_id": ""})
    assert r.status_code == 303
    entries = list(tenant_session(tenant).scalars(select(ContactLog).order_by(ContactLog.occurred_at)))
    # 14:30 in Shanghai is 06:30 UTC; an empty time means now.
    assert entries[0].occurred_at == dt.datetime(2025, 3, 1, 6, 30, tzinfo=dt.timezone.utc)
    assert entries[0].staff_user_id == sales.id
    assert abs(entries[1].occurred_at - clock.now_utc()) < dt.timedelta(minutes=5)
    client.post("/logout")
    login(client, colleague.email)
    page = client.get(f"/customers/{c.id}").text
    assert "Interested in a suite" in page and "Next step: Send the offer" in page and sales.name in page
    assert "2:30" in page  # shown in the tenant's time zone
    assert page.index("Visit") < page.index("Interested in a suite")  # latest first


@pytest.mark.parametrize("overrides, message", [
    ({"channel": "fax"}, "Choose one of the listed values."),
    ({"occurred_at": "2999-01-01T10:00"}, "The time cannot be in the future."),
    ({"occurred_at": "soon"}, "Not a valid datetime value."),
    ({"outcome": "x" * 501}, "At most 500 characters."),
    ({"next_step": "<b>x</b>"}, "Use plain text"),
])
def test_bad_contact_log_refused(client, hotel, make_customer, tenant_session, overrides, message):
    tenant, owner = hotel
    c = make_customer(tenant)
    login(client, owner.email)
    data = {"channel": "call", "occurred_at": "2025-03-01T14:30", "outcome": "Keep me", "next_step": "",
            "location_id": ""}
    data.update(overrides)
    r = client.post(f"/customers/{c.id}/contact-log/new", data=data)
    assert r.status_code == 422 and message in r.text
    assert _count(tenant_session, tenant, ContactLog) == 0


# --- the tenant wall on the new routes -------------------------------------------------------

def test_new_routes_404_for_another_tenants_ids(client, hotel, make_tenant, tenant_session):
    tenant, owner = hotel
    other, other_owner = make_tenant("bank")
    s = tenant_session(other)
    foreign = Customer(name="Foreign", company="Foreign Co")
    s.add(foreign)
    s.flush()
    pref = Preference(customer_id=foreign.id, category="room", key="k", value="v")
    contact = CustomerContact(customer_id=foreign.id, name="Boss")
    s.add_all([pref, contact])
    s.commit()
    mine = Customer(name="Mine")
    s2 = tenant_session(tenant)
    s2.add(mine)
    s2.commit()
    login(client, owner.email)
    fid = foreign.id
    for url in (f"/customers/{fid}/preferences/new", f"/customers/{fid}/contact-log/new",
                f"/customers/{fid}/decision-makers/new", f"/frontdesk/{fid}"):
        assert client.get(url).status_code == 404, url
    posts = {
        f"/customers/{fid}/preferences/new": {"category": "room", "key": "a", "value": "b"},
        f"/customers/{fid}/contact-log/new": {"channel": "call"},
        f"/customers/{fid}/decision-makers/new": {"name": "X"},
        f"/customers/{fid}/preferences/{pref.id}/delete": {},
        f"/customers/{fid}/decision-makers/{contact.id}/delete": {},
        # Another tenant's preference through one's own customer is not found either.
        f"/customers/{mine.id}/preferences/{pref.id}/delete": {},
        f"/customers/{mine.id}/decision-makers/{contact.id}/delete": {},
    }
    for url, data in posts.items():
        assert client.post(url, data=data).status_code == 404, url
    assert _count(tenant_session, other, Preference) == 1
    assert _count(tenant_session, other, CustomerContact) == 1
    assert _count(tenant_session, other, ContactLog) == 0
    r = client.get("/frontdesk?q=Foreign", headers={"HX-Request": "true"})
    assert "No customer matches" in r.text and f"/frontdesk/{fid}" not in r.text
