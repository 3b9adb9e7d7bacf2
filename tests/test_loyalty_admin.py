"""Loyalty administration screens: the rewards catalogue, the goodwill budget report,
member statements (HTML and PDF), the programme preview in Settings and referrals.
Both databases."""
from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from babel.numbers import format_currency, format_decimal
from sqlalchemy import func, select

from saas.auth.models import Role
from saas.customers.models import Customer, Transaction
from saas.loyalty import ledger, services
from saas.loyalty.models import LedgerEntry, Referral, Reward
from saas.loyalty.programme import Programme
from saas.settings.models import TransactionKind
from tests.conftest import login

ROOT = Path(__file__).resolve().parent.parent


def preset_programme(industry: str = "hotel") -> Programme:
    with open(ROOT / "tenants" / f"{industry}.toml", "rb") as fh:
        return Programme.from_data(tomllib.load(fh)["loyalty"])


def money(amount, tenant) -> str:
    return format_currency(Decimal(amount), tenant.currency, locale="en")


def num(n) -> str:
    return format_decimal(n, locale="en")


@pytest.fixture
def hotel_staff(hotel, add_member):
    """(tenant, owner, manager, staff) of a hotel."""
    tenant, owner = hotel
    return tenant, owner, add_member(tenant, "manager"), add_member(tenant, "staff")


def _as(client, user):
    assert login(client, user.email).status_code == 303
    return client


def _reward(write_session, tenant, **over):
    s = write_session(tenant)
    data = {"code": "tea-set", "name_zh": "下午茶套餐", "name_en": "Afternoon tea set", "points_cost": "800",
            "stock": "5"}
    data.update(over)
    r = services.save_reward(s, data)
    s.commit()
    return r


def _count(tenant_session, tenant, model) -> int:
    s = tenant_session(tenant)
    try:
        return s.scalar(select(func.count()).select_from(model))
    finally:
        s.rollback()


# --- rewards catalogue -----------------------------------------------------------------------

def test_staff_see_the_catalogue_but_cannot_change_it(client, hotel_staff, write_session):
    tenant, _owner, _manager, staff = hotel_staff
    reward = _reward(write_session, tenant)
    _reward(write_session, tenant, code="spa", name_zh="水疗", name_en="Spa visit", points_cost="3000", stock="",
            location_codes="main")
    _as(client, staff)
    page = client.get("/loyalty/rewards")
    assert page.status_code == 200
    text = page.text
    assert "Afternoon tea set" in text and "Spa visit" in text
    assert "800" in text and "3,000" in text
    assert "unlimited" in text  # the spa has no stock limit
    assert "Main hotel" in text  # its location, by name
    assert "every location" in text
    assert "Add a reward" not in text and "Deactivate" not in text
    assert client.get("/loyalty/rewards/new").status_code == 403
    assert client.post("/loyalty/rewards/new", data={"code": "x", "name_zh": "x", "name_en": "x",
                                                     "points_cost": "1"}).status_code == 403
    assert client.get(f"/loyalty/rewards/{reward.id}/edit").status_code == 403
    assert client.post(f"/loyalty/rewards/{reward.id}/active", data={"active": "0"}).status_code == 403


def test_the_catalogue_speaks_chinese(client, hotel_staff, write_session):
    tenant, _owner, _manager, staff = hotel_staff
    _reward(write_session, tenant)
    _as(client, staff)
    client.post("/language", data={"lang": "zh_CN"})
    text = client.get("/loyalty/rewards").text
    assert text.index("<strong>下午茶套餐</strong>") < text.index("Afternoon tea set")  # Chinese name first


def test_a_manager_adds_a_reward(client, hotel_staff, tenant_session):
    tenant, _owner, manager, _staff = hotel_staff
    _as(client, manager)
    form = client.get("/loyalty/rewards/new")
    assert form.status_code == 200
    assert 'value="main"' in form.text  # the hotel's location to tick
    r = client.post("/loyalty/rewards/new", data={
        "code": "lounge-pass", "name_zh": "行政酒廊券", "name_en": "Lounge pass", "points_cost": "1,200",
        "stock": "", "active_from": "2026-01-01", "active_until": "2026-12-31", "location_codes": ["main"],
        "active": "y"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/loyalty/rewards")
    s = tenant_session(tenant)
    reward = s.scalar(select(Reward).where(Reward.code == "lounge-pass"))
    assert (reward.points_cost, reward.stock, reward.location_codes, reward.active) == (1200, None, ["main"], True)
    assert (reward.active_from, reward.active_until) == (dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    assert "Lounge pass" in client.get("/loyalty/rewards").text


def test_a_reward_only_at_locations_now_inactive_is_not_shown_as_available(client, hotel_staff, write_session):
    from saas.settings.models import Location

    tenant, _owner, manager, _staff = hotel_staff
    s = write_session(tenant)
    services.save_reward(s, {"code": "lounge", "name_zh": "酒廊", "name_en": "Lounge pass", "points_cost": "100",
                             "stock": "", "location_codes": ["main"]})
    s.commit()
    _as(client, manager)
    row = lambda text: text[text.index("Lounge pass"):].split("</tr>")[0]  # noqa: E731
    assert "Available now" in row(client.get("/loyalty/rewards").text)
    s = write_session(tenant)
    s.scalar(select(Location).where(Location.code == "main")).active = False
    s.commit()
    shown = row(client.get("/loyalty/rewards").text)
    assert "None of its locations is active" in shown and "Available now" not in shown


def test_a_bad_reward_is_refused_field_by_field_keeping_what_was_typed(client, hotel_staff, tenant_session):
    tenant, _owner, manager, _staff = hotel_staff
    before = _count(tenant_session, tenant, Reward)  # the preset's catalogue
    _as(client, manager)
    r = client.post("/loyalty/rewards/new", data={
        "code": "", "name_zh": "早餐", "name_en": "Breakfast", "points_cost": "lots", "stock": "-3",
        "active_from": "2026-05-01", "active_until": "2026-04-01", "location_codes": ["nowhere"]})
    assert r.status_code == 422
    text = r.text
    assert "This field is required." in text                      # code
    assert "Enter a whole number from 1 to 10,000,000." in text   # points cost
    assert "Enter a whole number from 0 to 10,000,000." in text   # stock
    assert "The end must not be before the start." in text
    assert "Choose one of the listed values." in text             # location
    assert 'value="lots"' in text and 'value="-3"' in text and 'value="2026-05-01"' in text
    assert 'value="Breakfast"' in text
    assert _count(tenant_session, tenant, Reward) == before


def test_a_reward_code_is_a_code(client, hotel_staff, tenant_session):
    tenant, _owner, manager, _staff = hotel_staff
    before = _count(tenant_session, tenant, Reward)
    _as(client, manager)
    r = client.post("/loyalty/rewards/new", data={"code": "Bad Code!", "name_zh": "早餐", "name_en": "Breakfast",
                                                   "points_cost": "800", "active": "y"})
    assert r.status_code == 422
    assert "Use 1 to 40 lower-case letters, digits and hyphens, starting with a letter or digit." in r.text
    assert 'value="Bad Code!"' in r.text
    assert _count(tenant_session, tenant, Reward) == before


def test_a_manager_edits_deactivates_and_reactivates_a_reward(client, hotel_staff, write_session, tenant_session):
    tenant, _owner, manager, _staff = hotel_staff
    reward = _reward(write_session, tenant)
    _reward(write_session, tenant, code="spa", name_zh="水疗", name_en="Spa visit", points_cost="3000")
    _as(client, manager)
    page = client.get(f"/loyalty/rewards/{reward.id}/edit")
    assert page.status_code == 200 and 'value="800"' in page.text and 'value="tea-set"' in page.text
    data = {"code": "spa", "name_zh": "下午茶套餐", "name_en": "Afternoon tea set", "points_cost": "900", "stock": "5",
            "active": "y"}
    r = client.post(f"/loyalty/rewards/{reward.id}/edit", data=data)
    assert r.status_code == 422 and "Another reward already has this code." in r.text
    assert 'value="900"' in r.text
    r = client.post(f"/loyalty/rewards/{reward.id}/edit", data={**data, "code": "tea-set"})
    assert r.status_code == 303
    s = tenant_session(tenant)
    assert s.get(Reward, (tenant.id, reward.id)).points_cost == 900
    s.rollback()

    r = client.post(f"/loyalty/rewards/{reward.id}/active", data={"active": "0"})
    assert r.status_code == 303
    assert s.get(Reward, (tenant.id, reward.id)).active is False
    s.rollback()
    page = client.get("/loyalty/rewards").text
    assert "Reactivate" in page and "Inactive" in page
    assert client.post(f"/loyalty/rewards/{reward.id}/active", data={"active": "1"}).status_code == 303
    assert s.get(Reward, (tenant.id, reward.id)).active is True
    assert client.post(f"/loyalty/rewards/{reward.id}/active", data={"active": "maybe"}).status_code == 400


# --- goodwill budget report --------------------------------------------------------------------

def test_goodwill_report_per_member_with_totals(client, hotel_staff, write_session, make_customer):
    tenant, owner, manager, staff = hotel_staff
    guest = make_customer(tenant, name="王伟")
    s = write_session(tenant)
    prog = services.programme_of(s)
    customer = s.get(Customer, (tenant.id, guest.id))
    day = dt.date(2026, 3, 10)
    for on in (day, dt.date(2026, 3, 1)):  # a staff member may adjust 500 at a time (the preset)
        ledger.adjust(s, prog, customer, on, points=400, reason="noisy room", staff_user_id=staff.id,
                      role=Role.staff, goodwill=True)
    ledger.adjust(s, prog, customer, dt.date(2026, 3, 31), points=500, reason="late breakfast",
                  staff_user_id=manager.id, role=Role.manager, goodwill=True)
    # Another month, and an ordinary (not goodwill) adjustment: not counted.
    ledger.adjust(s, prog, customer, dt.date(2026, 4, 1), points=200, reason="cold shower", staff_user_id=staff.id,
                  role=Role.staff, goodwill=True)
    ledger.adjust(s, prog, customer, day, points=100, reason="correction", staff_user_id=staff.id, role=Role.staff)
    s.commit()

    _as(client, manager)
    page = client.get("/loyalty/goodwill?month=2026-03")
    assert page.status_code == 200
    text = page.text
    budget = prog.goodwill_budget
    assert budget == Decimal("2000")  # the hotel preset: every employee may spend $2,000 a month

    def row(name):
        m = re.search(re.escape(name) + r"</td>(.*?)</tr>", text, re.S)
        assert m, name
        return re.findall(r'<td class="num">(.*?)</td>', m.group(1), re.S)

    staff_value, manager_value = prog.points_value(800), prog.points_value(500)
    assert row(staff.name) == [num(800), money(staff_value, tenant), money(budget, tenant),
                               money(budget - staff_value, tenant)]
    assert row(manager.name) == [num(500), money(manager_value, tenant), money(budget, tenant),
                                 money(budget - manager_value, tenant)]
    assert owner.name not in text  # owners have no budget and granted nothing
    totals = re.search(r"<tfoot>(.*?)</tfoot>", text, re.S).group(1)
    assert [re.sub(r"<.*?>", "", c).strip() for c in re.findall(r'<td class="num">(.*?)</td>', totals, re.S)] == [
        num(1300), money(staff_value + manager_value, tenant), money(2 * budget, tenant),
        money(2 * budget - staff_value - manager_value, tenant)]

    april = client.get("/loyalty/goodwill?month=2026-04").text
    assert re.search(re.escape(staff.name) + r'</td>\s*<td class="num">200</td>', april)


def test_goodwill_report_leaves_out_members_deactivated_unless_they_granted_that_month(
        client, hotel_staff, write_session):
    from saas.auth import services as auth
    from saas.auth.models import Membership

    tenant, owner, manager, staff = hotel_staff
    s = write_session(tenant)
    auth.set_member_active(s, s.scalar(select(Membership).where(Membership.user_id == staff.id)), False, owner.id)
    s.commit()
    _as(client, manager)
    page = client.get("/loyalty/goodwill?month=2026-03").text
    assert manager.name in page and staff.name not in page


@pytest.mark.parametrize("month", ["2026-13", "March", "9999-12", "2026-03-01"])
def test_goodwill_report_refuses_a_bad_month_with_a_message(client, hotel_staff, month):
    _tenant, _owner, manager, _staff = hotel_staff
    _as(client, manager)
    r = client.get("/loyalty/goodwill", query_string={"month": month})
    assert r.status_code == 422
    assert "Enter a month such as 2026-03." in r.text
    assert f'value="{month}"' in r.text


def test_goodwill_report_is_for_managers(client, hotel_staff):
    _tenant, _owner, manager, staff = hotel_staff
    _as(client, staff)
    assert client.get("/loyalty/goodwill").status_code == 403
    client.post("/logout")
    _as(client, manager)
    page = client.get("/loyalty/goodwill")
    assert page.status_code == 200 and "Goodwill budget" in page.text


# --- member statements ---------------------------------------------------------------------------

@pytest.fixture
def member(hotel_staff, write_session, make_customer):
    """A hotel guest with a year of points: before, inside and after 2025-02-01..2025-12-31.
    Returns (tenant, staff, customer, expected) with the expected statement figures."""
    tenant, owner, _manager, staff = hotel_staff
    guest = make_customer(tenant, name="李娜", card_number="VIP-0042")
    s = write_session(tenant)
    prog = services.programme_of(s)
    customer = s.get(Customer, (tenant.id, guest.id))
    stay = s.scalar(select(TransactionKind).where(TransactionKind.code == "stay"))

    def earn(on, amount):
        tx = Transaction(customer_id=customer.id, kind_id=stay.id, occurred_on=on, amount=Decimal(amount),
                         external_id=f"PMS-{on.isoformat()}")
        s.add(tx)
        s.flush()
        return services.award(s, tx, customer, owner.id, on).points

    before = earn(dt.date(2025, 1, 10), "1000")
    inside = earn(dt.date(2025, 3, 1), "2000")
    reward = services.save_reward(s, {"code": "tea-set", "name_zh": "下午茶套餐", "name_en": "Afternoon tea set",
                                      "points_cost": "50"})
    redemption = ledger.redeem(s, prog, customer, dt.date(2025, 4, 1), reward=reward, staff_user_id=staff.id)
    ledger.adjust(s, prog, customer, dt.date(2025, 5, 1), points=30, reason="noisy room", staff_user_id=owner.id,
                  role=Role.owner, goodwill=True)
    ledger.void_redemption(s, prog, redemption, owner.id, "guest changed their mind", dt.date(2025, 6, 1))
    after = earn(dt.date(2026, 1, 5), "500")
    s.commit()
    assert before == prog.earn(Decimal(1000), 1, "stay", dt.date(2025, 1, 10)).points
    expected = {"opening": before, "earned": inside, "redeemed": 50, "other": 30 + 50,
                "closing": before + inside - 50 + 30 + 50, "after": after}
    return tenant, staff, customer, expected


def _totals(text: str) -> dict:
    table = re.search(r'<table class="table totals statement-totals">(.*?)</table>', text, re.S).group(1)
    return {re.sub(r"<.*?>", "", th).strip(): td.strip()
            for th, td in re.findall(r'<th scope="row">(.*?)</th><td class="num">(.*?)</td>', table, re.S)}


def test_statement_for_a_period_with_opening_and_closing_balances(client, member):
    tenant, staff, customer, exp = member
    _as(client, staff)  # staff may give a guest their statement
    r = client.get(f"/customers/{customer.id}/loyalty/statement?start=2025-02-01&end=2025-12-31")
    assert r.status_code == 200
    text = r.text
    assert tenant.name in text and "李娜" in text and "VIP-0042" in text
    totals = _totals(text)
    assert totals["Opening balance"] == num(exp["opening"])
    assert totals["Points earned in the period"] == "+" + num(exp["earned"])
    assert totals["Points redeemed in the period"] == "−" + num(exp["redeemed"])
    assert totals["Other changes (expired, adjusted, refunded, voided)"] == "+" + num(exp["other"])
    assert totals["Closing balance"] == num(exp["closing"])
    entries = re.search(r'<table class="table statement-entries">(.*?)</table>', text, re.S).group(1)
    assert entries.count("<tr>") == 1 + 4  # header + earn, redeem, goodwill, void
    assert "Afternoon tea set" in entries and "PMS-2025-03-01" in entries
    assert "Goodwill" in entries and "noisy room" in entries and "Redemption voided" in entries
    assert "(voided)" in entries
    assert "PMS-2025-01-10" not in entries and "PMS-2026-01-05" not in entries
    assert "Member" in text  # current tier


def test_statement_defaults_to_the_last_twelve_months(client, member, monkeypatch):
    from saas import clock

    _tenant, staff, customer, exp = member
    monkeypatch.setattr(clock, "today", lambda tz="UTC": dt.date(2026, 1, 31))
    _as(client, staff)
    text = client.get(f"/customers/{customer.id}/loyalty/statement").text
    assert 'value="2025-02-01"' in text and 'value="2026-01-31"' in text
    totals = _totals(text)
    assert totals["Opening balance"] == num(exp["opening"])
    assert totals["Closing balance"] == num(exp["closing"] + exp["after"])


@pytest.mark.parametrize("query, field_message", [
    ({"start": "2025-02-30", "end": "2025-12-31"}, "Enter a date such as 2026-03-31."),
    ({"start": "2025-06-01", "end": "2025-05-01"}, "The end of the period must not be before its start."),
    ({"start": "2015-01-01", "end": "2025-05-01"}, "A statement covers at most five years."),
    ({"start": "0001-01-01", "end": "0001-02-01"}, "Enter a date such as 2026-03-31."),
    ({"start": "2020-01-01", "end": "2025-01-04"}, "A statement covers at most five years."),  # 366 × 5 let it by
])
def test_statement_refuses_a_bad_period(client, member, query, field_message):
    _tenant, staff, customer, _exp = member
    _as(client, staff)
    for path in ("statement", "statement.pdf"):
        r = client.get(f"/customers/{customer.id}/loyalty/{path}", query_string=query)
        assert r.status_code == 422, path
        assert field_message in r.text
        assert f'value="{query["start"]}"' in r.text


def test_five_years_to_the_day_is_a_statement(client, member):
    _tenant, staff, customer, _exp = member
    _as(client, staff)
    r = client.get(f"/customers/{customer.id}/loyalty/statement", query_string={"start": "2020-01-01",
                                                                               "end": "2024-12-31"})
    assert r.status_code == 200


def test_a_refused_pdf_period_is_said_in_the_users_language_not_the_pdfs(client, member):
    _tenant, staff, customer, _exp = member
    _as(client, staff)
    client.post("/language", data={"lang": "zh_CN"})
    r = client.get(f"/customers/{customer.id}/loyalty/statement.pdf",
                   query_string={"start": "2025-06-01", "end": "2025-02-01", "lang": "en"})
    assert r.status_code == 422 and "结束日期不能早于开始日期。" in r.text and '<html lang="zh' in r.text


def _pdf_pages(pdf: bytes, tmp_path) -> tuple[int, str]:
    """(pages, text) of a PDF, read with poppler's tools when installed."""
    if not (shutil.which("pdfinfo") and shutil.which("pdftotext")):
        return len(re.findall(rb"/Type\s*/Page\b", pdf)), ""
    path = tmp_path / "statement.pdf"
    path.write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1)), text


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_statement_pdf_in_each_language(client, member, lang, tmp_path):
    _tenant, staff, customer, exp = member
    _as(client, staff)
    r = client.get(f"/customers/{customer.id}/loyalty/statement.pdf?start=2025-02-01&end=2025-12-31&lang={lang}")
    assert r.status_code == 200
    assert r.mimetype == "application/pdf"
    assert r.data.startswith(b"%PDF")
    assert "statement-VIP-0042-2025-02-01-2025-12-31.pdf" in r.headers["Content-Disposition"]
    pages, text = _pdf_pages(r.data, tmp_path)
    assert pages >= 1
    if text:
        assert "李娜" in text and "VIP-0042" in text  # the CJK font has the glyphs
        assert num(exp["closing"]) in text
        if lang == "en":
            assert "Closing balance" in text and "Afternoon tea set" in text
        else:
            assert "下午茶套餐" in text  # the reward's Chinese name


def test_statement_of_another_tenants_customer_is_not_found(client, member, make_tenant):
    _tenant, _staff, customer, _exp = member
    _other, other_owner = make_tenant("bank")
    _as(client, other_owner)
    assert client.get(f"/customers/{customer.id}/loyalty/statement").status_code == 404
    assert client.get(f"/customers/{customer.id}/loyalty/statement.pdf").status_code == 404


# --- settings preview -------------------------------------------------------------------------------

def test_programme_settings_preview_for_the_hotel(client, hotel):
    tenant, owner = hotel
    prog = preset_programme("hotel")
    _as(client, owner)
    page = client.get("/settings/programme/loyalty")
    assert page.status_code == 200
    text = page.text
    points = {t.code: prog.earn(Decimal(1280), 1, "stay", dt.date.min, tier_code=t.code).points for t in prog.tiers}
    # 1 point per ¥10 plus the preset's flat points per night; Gold × 1.25.
    flat = sum(p for kind, _per, p in prog.flat_points if kind in ("", "stay"))
    assert points["member"] == 128 + flat and points["gold"] == 160 + flat
    amount = money(1280, tenant)
    assert f"A {amount} stay earns {num(points['member'])} points at Member" in text
    for t in prog.tiers[1:]:
        assert f"{t.name_en} earns {num(points[t.code])}" in text
    # The summary, read from the programme.
    assert "1 point per " + money(10, tenant) in text
    assert "Points expire 24 months after they were earned." in text
    assert "Stay: 20 extra points per night or item." in text
    assert "Spring Festival double points" in text
    assert "Birthday bonus: 200 points" in text
    assert "Referral: 500 points for the customer who referred, 200 points for the new customer" in text
    assert "At least 500 points at a time." in text
    assert "staff up to 500 points at a time, managers up to 5,000" in text
    assert money(2000, tenant) in text
    assert "Late check-out until 13:00" in text


def test_preview_recomputes_for_another_amount_and_kind(client, hotel):
    _tenant, owner = hotel
    prog = preset_programme("hotel")
    _as(client, owner)
    r = client.get("/settings/programme/loyalty/preview?amount=2,500.50&kind=banquet", headers={"HX-Request": "true"})
    assert r.status_code == 200
    assert "<html" not in r.text  # a fragment for htmx
    member_points = prog.earn(Decimal("2500.50"), 1, "banquet", dt.date.min, tier_code="member").points
    gold_points = prog.earn(Decimal("2500.50"), 1, "banquet", dt.date.min, tier_code="gold").points
    assert member_points == 250 and gold_points == 312  # no flat points for banquets
    assert f"earns {num(member_points)} points at Member" in r.text
    assert f"Gold earns {num(gold_points)}" in r.text
    # Without JavaScript the form reloads the whole page with the same figures.
    page = client.get("/settings/programme/loyalty?amount=2500.50&kind=banquet")
    assert page.status_code == 200 and f"Gold earns {num(gold_points)}" in page.text


def test_preview_counts_the_department_multiplier(client, hotel):
    _tenant, owner = hotel
    prog = preset_programme("hotel")
    _as(client, owner)
    query = {"amount": "1000", "kind": "food-beverage", "department": "food-beverage"}
    r = client.get("/settings/programme/loyalty/preview", query_string=query, headers={"HX-Request": "true"})
    assert r.status_code == 200
    gold = prog.earn(Decimal(1000), 1, "food-beverage", dt.date.min, department="food-beverage", tier_code="gold")
    assert gold.points == 187 and gold.detail["category_multiplier"] == "1.5"  # 100 x 1.5 x 1.25
    assert f"Gold earns {num(gold.points)}" in r.text
    assert "× 1.5 (department multiplier)" in r.text
    page = client.get("/settings/programme/loyalty", query_string=query).text
    assert '<option value="food-beverage" selected>' in page and f"Gold earns {num(gold.points)}" in page


@pytest.mark.parametrize("query, message", [
    ({"amount": "1280", "kind": "stay", "department": "casino"}, "Choose one of the listed values."),
    ({"amount": "lots", "kind": "stay"}, "Enter an amount such as 1280.00."),
    ({"amount": "-5", "kind": "stay"}, "Enter an amount such as 1280.00."),
    ({"amount": "1280", "kind": "spaceflight"}, "Choose one of the listed values."),
])
def test_preview_refuses_bad_input_with_a_message(client, hotel, query, message):
    _tenant, owner = hotel
    _as(client, owner)
    r = client.get("/settings/programme/loyalty/preview", query_string=query)
    assert r.status_code == 422 and message in r.text
    page = client.get("/settings/programme/loyalty", query_string=query)
    assert page.status_code == 422 and message in page.text
    assert f'value="{query["amount"]}"' in page.text


def test_an_invalid_programme_still_shows_its_errors_and_the_saved_preview(client, hotel):
    _tenant, owner = hotel
    _as(client, owner)
    r = client.post("/settings/programme/loyalty", data={"text": 'points_per_currency_unit = "many"\n'})
    assert r.status_code == 422
    assert "Nothing was saved" in r.text
    assert "Preview of the saved programme" in r.text
    assert "earns 148 points at Member" in r.text  # the saved programme is unchanged


def test_the_preview_follows_the_saved_programme(client, hotel, write_session):
    from saas.settings import services as settings_services

    tenant, owner = hotel
    s = write_session(tenant)
    settings_services.update_programme_section(s, "loyalty", "\n".join([
        "[loyalty]", 'points_per_currency_unit = "0.3"', 'tier_measure = "spend"', 'expiry = "never"',
        'evaluation_window = "calendar_year"', 'tier_review = "january"', "pending_days = 7",
        "[[loyalty.tiers]]", 'code = "basic"', 'name_zh = "基础"', 'name_en = "Basic"', "threshold = 0",
        "[[loyalty.tiers]]", 'code = "elite"', 'name_zh = "精英"', 'name_en = "Elite"', "threshold = 20000",
        'multiplier = "2"']))
    s.commit()
    _as(client, owner)
    text = client.get("/settings/programme/loyalty?amount=100&kind=stay").text
    assert "A " + money(100, tenant) + " stay earns 30 points at Basic; Elite earns 60." in text
    assert "Points never expire." in text
    assert "New points can be redeemed 7 days after they are earned." in text
    assert "Tiers are reached by spend, counted over the calendar year." in text
    assert "reviewed every 1 January" in text
    assert money(20000, tenant) in text  # a spend threshold is money
    assert "0.3 points per " + money(1, tenant) in text
    assert "No goodwill budget" in text and "No birthday bonus." in text


def test_only_owners_see_the_programme_preview(client, hotel_staff):
    _tenant, _owner, manager, _staff = hotel_staff
    _as(client, manager)
    assert client.get("/settings/programme/loyalty/preview").status_code == 403


# --- referrals ------------------------------------------------------------------------------------------

def test_staff_record_who_referred_a_customer(client, hotel_staff, make_customer, tenant_session):
    tenant, _owner, _manager, staff = hotel_staff
    newcomer = make_customer(tenant, name="新客人")
    friend = make_customer(tenant, name="老朋友", card_number="CARD-77", phone="+8613800138077")
    _as(client, staff)
    page = client.get(f"/customers/{newcomer.id}")
    assert "Referred by" in page.text and "nobody recorded" in page.text
    found = client.get(f"/customers/{newcomer.id}/loyalty/referrer?q=CARD-77")
    assert found.status_code == 200 and "老朋友" in found.text
    assert "新客人" not in re.sub(r"<title>.*?</title>|<h1>.*?</h1>|breadcrumb.*?</p>", "", found.text, flags=re.S)
    r = client.post(f"/customers/{newcomer.id}/loyalty/referrer", data={"referrer_id": str(friend.id)})
    assert r.status_code == 303
    page = client.get(f"/customers/{newcomer.id}").text
    assert re.search(r"Referred by:</strong>\s*<a href=\"/customers/" + str(friend.id), page)
    s = tenant_session(tenant)
    assert s.scalar(select(Referral.referrer_id).where(Referral.customer_id == newcomer.id)) == friend.id
    s.rollback()
    # Once recorded, it stays; the customer cannot refer themselves; a made-up id is refused.
    again = client.post(f"/customers/{newcomer.id}/loyalty/referrer", data={"referrer_id": str(friend.id)})
    assert again.status_code == 422 and "already recorded" in again.text
    selfish = client.post(f"/customers/{friend.id}/loyalty/referrer", data={"referrer_id": str(friend.id)})
    assert selfish.status_code == 422 and "cannot refer themselves" in selfish.text
    bogus = client.post(f"/customers/{friend.id}/loyalty/referrer", data={"referrer_id": "nonsense"})
    assert bogus.status_code == 422 and "Choose the referrer from the search results." in bogus.text
    assert s.scalar(select(func.count()).select_from(Referral)) == 1


def test_a_customer_with_transactions_is_not_recorded_as_referred(client, hotel_staff, make_customer,
                                                                  write_session, tenant_session):
    tenant, _owner, _manager, staff = hotel_staff
    regular = make_customer(tenant, name="老客人")
    friend = make_customer(tenant, name="老朋友", card_number="CARD-77")
    s = write_session(tenant)
    kind = s.scalar(select(TransactionKind).where(TransactionKind.is_default.is_(True)))
    s.add(Transaction(customer_id=regular.id, kind_id=kind.id, occurred_on=dt.date(2026, 3, 1), amount=Decimal("100")))
    s.commit()
    _as(client, staff)
    page = client.get(f"/customers/{regular.id}").text
    hint = "A referral is recorded for a new customer, before the first transaction that gives its rewards"
    assert hint in page and f'action="/customers/{regular.id}/loyalty/referrer"' not in page
    r = client.post(f"/customers/{regular.id}/loyalty/referrer", data={"referrer_id": str(friend.id)})
    assert r.status_code == 422 and hint in r.text
    assert _count(tenant_session, tenant, Referral) == 0


def test_a_nul_in_a_reward_name_is_dropped_not_a_500(client, hotel_staff, tenant_session):
    _tenant, _owner, manager, _staff = hotel_staff
    _as(client, manager)
    r = client.post("/loyalty/rewards/new", data={"code": "tea", "name_zh": "早\x00茶", "name_en": "Tea",
                                                  "points_cost": "100", "active": "y"})
    assert r.status_code == 303
    assert tenant_session(hotel_staff[0]).scalar(select(Reward.name_zh).where(Reward.code == "tea")) == "早茶"


def test_search_by_phone_finds_the_referrer(client, hotel_staff, make_customer):
    tenant, _owner, _manager, staff = hotel_staff
    newcomer = make_customer(tenant, name="新客人")
    make_customer(tenant, name="老朋友", phone="+8613800138077")
    _as(client, staff)
    found = client.get(f"/customers/{newcomer.id}/loyalty/referrer?q=13800138077")
    assert "老朋友" in found.text


def test_a_foreign_referrer_id_is_refused(client, hotel_staff, make_customer, make_tenant, tenant_session):
    tenant, _owner, _manager, staff = hotel_staff
    newcomer = make_customer(tenant, name="新客人")
    other, _other_owner = make_tenant("bank")
    stranger = make_customer(other, name="Stranger")
    _as(client, staff)
    r = client.post(f"/customers/{newcomer.id}/loyalty/referrer", data={"referrer_id": str(stranger.id)})
    assert r.status_code == 422
    assert _count(tenant_session, tenant, Referral) == 0


def test_ledger_untouched_by_page_views(client, member, tenant_session):
    """Reading the screens writes nothing."""
    tenant, staff, customer, _exp = member
    before = _count(tenant_session, tenant, LedgerEntry)
    _as(client, staff)
    client.get(f"/customers/{customer.id}/loyalty/statement")
    client.get("/loyalty/rewards")
    assert _count(tenant_session, tenant, LedgerEntry) == before


def test_the_preview_sentence_in_chinese_names_the_kind_once(client, make_tenant):
    _tenant, owner = make_tenant(industry="hotel", language="zh_CN")
    _as(client, owner)
    r = client.get("/settings/programme/loyalty/preview", query_string={"amount": "1000", "kind": "food-beverage"})
    assert r.status_code == 200
    assert "餐饮消费 ¥1,000.00，普通会员可获得" in r.text and "消费消费" not in r.text


def test_the_preview_starts_from_an_amount_that_earns_something(client, make_tenant):
    """A bank earns 1 point per ¥1,000: its preview starts from ¥100,000 (100 points), not
    ¥1,280 (1 point at every tier)."""
    _tenant, owner = make_tenant(industry="bank")
    _as(client, owner)
    page = client.get("/settings/programme/loyalty").text
    assert 'id="preview-amount" name="amount" value="100000"' in page
    assert "earns 100 points at" in page
