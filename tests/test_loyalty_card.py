"""Loyalty on the guest card: the panel (balance, tier, progress, retention, expiry, debt),
the loyalty page and its history, and the award (record visit), redeem, adjust, void and
reverse dialogs as a front-desk tablet uses them. Both databases."""
from __future__ import annotations

import datetime as dt
import html
import re
from decimal import Decimal

import pytest
from babel.dates import format_date
from sqlalchemy import func, select

from saas import clock
from saas.customers.models import Customer, Transaction
from saas.loyalty import ledger, services
from saas.loyalty.models import LedgerEntry, Reward
from saas.settings.models import Location, ProgrammeSection, TransactionKind
from tests.conftest import login

DAY = dt.date(2026, 3, 10)

PROGRAMME = {
    "points_per_currency_unit": "0.1",
    "expiry": "months",
    "expiry_months": 24,
    "tiers": [
        {"code": "member", "name_zh": "普通会员", "name_en": "Member", "threshold": 0},
        {"code": "silver", "name_zh": "银卡会员", "name_en": "Silver", "threshold": 1000, "retention_threshold": 800,
         "discount_percent": "5", "perks_zh": "延迟退房至13:00", "perks_en": "Late check-out until 13:00"},
        {"code": "gold", "name_zh": "金卡会员", "name_en": "Gold", "threshold": 5000, "retention_threshold": 4000},
    ],
    "point_value": "0.01",
    "min_redeem_points": 100,
    "adjust_limits": {"staff": 200, "manager": 5000},
    "goodwill_budget": "5",  # ¥5 = 500 points a month for each member
}


@pytest.fixture(autouse=True)
def business_day(monkeypatch):
    """The tenant's business day, fixed (views ask saas.clock.today)."""
    monkeypatch.setattr(clock, "today", lambda tz="UTC": DAY)


@pytest.fixture
def desk(app, hotel, add_member, make_customer, write_session):
    """A hotel with the test programme, a staff member, a manager and a guest."""
    tenant, owner = hotel
    s = write_session(tenant)
    row = s.scalar(select(ProgrammeSection).where(ProgrammeSection.section == "loyalty"))
    row.data = PROGRAMME
    row.updated_at = clock.now_utc()
    s.commit()
    staff = add_member(tenant, "staff")
    manager = add_member(tenant, "manager")
    guest = make_customer(tenant, name="王伟", address_as="王先生", phone="+8613800138000")
    return Desk(app, tenant, owner, staff, manager, guest, write_session)


class Desk:
    def __init__(self, app, tenant, owner, staff, manager, guest, write_session):
        self.app, self.tenant, self.owner, self.staff, self.manager, self.guest = \
            app, tenant, owner, staff, manager, guest
        self._write_session = write_session

    def session(self):
        """A write session (BEGIN IMMEDIATE on SQLite): commit what it did at once."""
        return self._write_session(self.tenant)

    def read(self, fn):
        """fn(session) in a read-only session, ended before the next request."""
        s = self.app.extensions["huitou_db"].new_session(read_only=True, tenant_id=self.tenant.id)
        try:
            result = fn(s)
            s.expunge_all()  # keep what was read readable after the session ends
            return result
        finally:
            s.rollback()
            s.close()

    def earn(self, amount, on=DAY) -> Transaction:
        """A transaction of ``amount`` on ``on`` and its points, as the ledger books them."""
        s = self.session()
        customer = s.get(Customer, (self.tenant.id, self.guest.id))
        kind = s.scalar(select(TransactionKind).where(TransactionKind.code == "stay"))
        tx = Transaction(customer_id=customer.id, kind_id=kind.id, occurred_on=on, amount=Decimal(amount))
        s.add(tx)
        s.flush()
        services.award(s, tx, customer, self.owner.id, on)
        s.commit()
        return tx

    def reward(self, code="t-tea", cost=100, stock=None, **more) -> Reward:
        """A reward of its own (the hotel preset's catalogue is there too)."""
        s = self.session()
        r = services.save_reward(s, {"code": code, "name_zh": "双人茶点", "name_en": "Tea for two",
                                     "points_cost": str(cost), "stock": "" if stock is None else str(stock), **more})
        s.commit()
        return r

    def redeem(self, points=None, reward=None, on=DAY) -> LedgerEntry:
        s = self.session()
        customer = s.get(Customer, (self.tenant.id, self.guest.id))
        if reward is not None:
            reward = s.get(Reward, (self.tenant.id, reward.id))
        entry = ledger.redeem(s, services.programme_of(s), customer, on, points=points, reward=reward,
                              staff_user_id=self.owner.id)
        s.commit()
        return entry

    def balance(self) -> int:
        def read(s):
            acc = ledger.account(s, self.guest.id)
            assert acc is None or acc.balance == ledger.ledger_sum(s, self.guest.id)
            return acc.balance if acc else 0
        return self.read(read)

    def entries(self, kind=None) -> list[LedgerEntry]:
        q = select(LedgerEntry).where(LedgerEntry.customer_id == self.guest.id)
        if kind:
            q = q.where(LedgerEntry.kind == kind)
        return self.read(lambda s: list(s.scalars(q.order_by(LedgerEntry.created_at))))

    def get(self, model, id_):
        return self.read(lambda s: s.get(model, (self.tenant.id, id_)))

    @property
    def card(self) -> str:
        return f"/frontdesk/{self.guest.id}"

    @property
    def page(self) -> str:
        return f"/customers/{self.guest.id}/loyalty"


def key_from(html: str) -> str:
    m = re.search(r'name="idempotency_key"[^>]*value="([0-9a-f]{32})"', html) or \
        re.search(r'value="([0-9a-f]{32})"[^>]*name="idempotency_key"', html)
    assert m, "no idempotency key in the form"
    return m.group(1)


# --- the panel ------------------------------------------------------------------------------------

def test_panel_shows_balance_tier_progress_retention_and_expiry(client, desk):
    # 50 points that expire within 90 days (earned 23 months ago, outside the tier window)
    desk.earn("500", dt.date(2024, 4, 20))
    # Silver reached 100 days ago with 600 + 500 points; the review window since then has 500.
    desk.earn("6000", DAY - dt.timedelta(days=200))
    desk.earn("5000", DAY - dt.timedelta(days=100))
    login(client, desk.staff.email)
    r = client.get(desk.card, headers={"HX-Request": "true"})
    assert r.status_code == 200
    panel = r.text[r.text.index("loyalty-panel"):r.text.index("gc-last-visit")]
    assert "Silver" in panel and "Late check-out until 13:00" in panel and "5% off" in panel
    assert "1,150" in panel  # balance
    assert "1,150 redeemable" in panel and "worth CN¥11.50" in panel
    assert "Needs 3,900 more points to reach Gold" in panel
    since = DAY - dt.timedelta(days=100)
    keep_by = dt.date(since.year + 1, since.month, since.day) - dt.timedelta(days=1)
    assert f"Needs 300 more points by {keep_by:%b} {keep_by.day}, {keep_by.year} to keep Silver" in panel
    assert "50 points expire on Apr 20, 2026" in panel
    assert "Owes" not in panel
    assert f'href="/customers/{desk.guest.id}/loyalty"' in panel
    assert f'href="/customers/{desk.guest.id}/loyalty/redeem?return=card"' in r.text


def test_panel_for_a_new_customer_and_in_chinese(client, desk, add_member):
    login(client, desk.staff.email)
    r = client.get(desk.card, headers={"HX-Request": "true"})
    assert "Member" in r.text and "0 redeemable" in r.text and "Needs 1,000 more points to reach Silver" in r.text
    zh = add_member(desk.tenant, "staff", language="zh_CN")
    desk.earn("12800")
    login(client, zh.email)
    r = client.get(desk.card, headers={"HX-Request": "true"})
    assert "银卡会员" in r.text and "延迟退房至13:00" in r.text and "1,280" in r.text
    page = client.get(desk.page).text
    assert "（累计积分）" in page and "(累计积分)" not in page  # Chinese punctuation in Chinese


def test_panel_warns_when_the_account_owes_points(client, desk):
    tx = desk.earn("1000")  # 100 points
    desk.redeem(points=100)
    s = desk.session()
    services.reverse(s, s.get(Transaction, (desk.tenant.id, tx.id)), desk.owner.id, "refund", DAY)
    s.commit()
    assert desk.balance() == -100
    login(client, desk.staff.email)
    r = client.get(desk.card, headers={"HX-Request": "true"})
    assert "Owes 100 points" in r.text
    assert "redemptions are refused until the balance is positive again" in r.text
    page = client.get(desk.page)
    assert page.status_code == 200 and "Owes 100 points" in page.text and "-100" in page.text


# --- award: recording a visit earns points --------------------------------------------------------

def test_recording_a_visit_awards_points_in_the_same_request(client, desk):
    login(client, desk.staff.email)
    kind = desk.read(lambda s: s.scalar(select(TransactionKind).where(TransactionKind.code == "stay")))
    r = client.post(f"/customers/{desk.guest.id}/transactions/new?return=card",
                    data={"kind_id": str(kind.id), "occurred_on": DAY.isoformat(), "amount": "1280",
                          "quantity": "1", "location_id": "", "department_id": "", "note": ""})
    assert r.status_code == 303 and r.headers["Location"].endswith(desk.card)
    card = client.get(desk.card).text
    assert "Earned 128 points; balance 128." in card
    assert desk.balance() == 128
    [earn] = desk.entries("earn")
    tx = desk.read(lambda s: s.scalar(select(Transaction).where(Transaction.customer_id == desk.guest.id)))
    assert earn.transaction_id == tx.id and earn.staff_user_id == desk.staff.id
    # A refused visit records nothing and awards nothing.
    r = client.post(f"/customers/{desk.guest.id}/transactions/new",
                    data={"kind_id": str(kind.id), "occurred_on": DAY.isoformat(), "amount": "-5", "quantity": "1"})
    assert r.status_code == 422
    assert desk.balance() == 128 and len(desk.entries()) == 1


# --- redeem --------------------------------------------------------------------------------------------

def test_redeem_a_reward_once_even_when_the_form_is_sent_twice(client, desk):
    desk.earn("5000")  # 500 points
    reward = desk.reward(cost=120, stock=3)
    login(client, desk.staff.email)
    page = client.get(f"/customers/{desk.guest.id}/loyalty/redeem?return=card")
    assert page.status_code == 200 and "Tea for two" in page.text and "120 points" in page.text
    key = key_from(page.text)
    data = {"reward": str(reward.id), "points": "", "note": "room 1208", "idempotency_key": key}
    url = f"/customers/{desk.guest.id}/loyalty/redeem?return=card"
    r = client.post(url, data=data)
    assert r.status_code == 303 and r.headers["Location"].endswith(desk.card)
    assert "Redeemed 120 points for Tea for two. Balance: 380 points." in client.get(desk.card).text
    again = client.post(url, data=data)  # a double tap
    assert again.status_code == 303
    assert desk.balance() == 380
    [entry] = desk.entries("redeem")
    assert entry.reward_id == reward.id and entry.reason == "room 1208" and entry.staff_user_id == desk.staff.id
    assert desk.get(Reward, reward.id).stock == 2
    # A new dialog has a new key.
    assert key_from(client.get(url).text) != key


def test_pay_with_points_shows_the_cash_value(client, desk):
    desk.earn("5000")
    login(client, desk.staff.email)
    page = client.get(f"/customers/{desk.guest.id}/loyalty/redeem").text
    assert "1 point pays CN¥0.01" in page and "at least 100 points" in page
    value = client.get(f"/customers/{desk.guest.id}/loyalty/points-value?points=250", headers={"HX-Request": "true"})
    assert value.status_code == 200 and "250 points pay CN¥2.50" in value.text
    r = client.post(f"/customers/{desk.guest.id}/loyalty/redeem",
                    data={"reward": "points", "points": "250", "idempotency_key": key_from(page)})
    assert r.status_code == 303 and r.headers["Location"].endswith(desk.page)
    assert "Paid CN¥2.50 with 250 points." in client.get(desk.page).text
    [entry] = desk.entries("redeem")
    assert entry.points == -250 and entry.cash_value == Decimal("2.50")


@pytest.mark.parametrize("case", ["insufficient", "below_minimum", "unavailable", "owes", "no_points"])
def test_refused_redemptions_answer_422_keep_the_input_and_write_nothing(client, desk, case):
    tx = desk.earn("1500")  # 150 points
    big = desk.reward("t-suite", cost=1000)
    last = desk.reward("t-spa", cost=50, stock=1)
    login(client, desk.staff.email)
    url = f"/customers/{desk.guest.id}/loyalty/redeem"
    key = key_from(client.get(url).text)
    data = {"reward": "points", "points": "", "note": "typed note", "idempotency_key": key}
    if case == "insufficient":
        data.update(reward=str(big.id))
        message = "Not enough points: 150 can be redeemed, 1,000 are needed."
    elif case == "below_minimum":
        data.update(points="50")
        message = "Use at least 100 points at a time."
    elif case == "unavailable":
        desk.redeem(reward=last)  # the last one goes while the dialog is open
        data.update(reward=str(last.id))
        message = "This reward cannot be redeemed now"
    elif case == "owes":
        desk.redeem(points=100)
        s = desk.session()
        services.reverse(s, s.get(Transaction, (desk.tenant.id, tx.id)), None, "refund", DAY)
        s.commit()
        data.update(points="100")
        message = "nothing can be redeemed until it is paid back"
    else:
        message = "Enter the number of points to pay with."
    before = [(e.id, e.points) for e in desk.entries()]
    r = client.post(url, data=data)
    assert r.status_code == 422
    assert message in r.text
    assert 'value="typed note"' in r.text and key in r.text
    if data["points"]:
        assert f'value="{data["points"]}"' in r.text
    if case == "below_minimum":  # about the points typed: said beside them
        beside = r.text[r.text.index('id="points-errors"'):]
        assert message in beside[:beside.index("</ul>")]
    assert [(e.id, e.points) for e in desk.entries()] == before


def test_a_reward_of_one_location_is_redeemed_there_and_the_tablet_remembers_its_place(client, desk):
    from saas.settings import services as settings_services

    s = desk.session()
    settings_services.save_entry(s, "locations", {"code": "spa", "name_zh": "水疗中心", "name_en": "Spa wing",
                                                  "active": True})
    s.commit()
    desk.earn("5000")  # 500 points
    reward = desk.reward(code="t-massage", cost=100, location_codes=["main"])
    login(client, desk.staff.email)
    url = f"/customers/{desk.guest.id}/loyalty/redeem"
    page = client.get(url)
    assert "only at Main hotel" in page.text and "Where it is redeemed" in page.text
    assert 'selected value=""' in page.text or '<option selected value="">' in page.text  # no place known yet
    data = {"reward": str(reward.id), "points": "", "location": "spa", "idempotency_key": key_from(page.text)}
    refused = client.post(url, data=data)
    assert refused.status_code == 422
    assert "This reward is given only at Main hotel: choose where it is redeemed." in refused.text
    assert desk.entries("redeem") == []
    data["location"] = ""
    assert client.post(url, data=data).status_code == 422
    data["location"] = "main"
    done = client.post(url, data=data)
    assert done.status_code == 303 and "huitou_location=main" in done.headers["Set-Cookie"]
    assert desk.balance() == 400
    # This tablet redeemed at the main hotel: the next dialog starts there, and so does
    # the record-visit form.
    assert re.search(r'<option selected value="main">|<option value="main" selected>', client.get(url).text)
    ids = desk.read(lambda s: {e.code: str(e.id) for e in s.scalars(select(Location))})
    visit_url = f"/customers/{desk.guest.id}/transactions/new"
    visit = client.get(visit_url).text
    assert re.search(rf'<option selected value="{ids["main"]}">', visit)
    # A visit recorded at the spa wing moves the tablet there.
    kind = desk.read(lambda s: s.scalar(select(TransactionKind.id).where(TransactionKind.code == "stay")))
    recorded = client.post(visit_url, data={"kind_id": str(kind), "occurred_on": DAY.isoformat(), "amount": "100",
                                            "quantity": "1", "location_id": ids["spa"], "department_id": "",
                                            "note": ""})
    assert recorded.status_code == 303 and "huitou_location=spa" in recorded.headers["Set-Cookie"]
    assert re.search(r'<option selected value="spa">', client.get(url).text)


def test_redeem_dialog_in_chinese(client, desk, add_member):
    desk.earn("1500")
    desk.reward(cost=1000)
    zh = add_member(desk.tenant, "staff", language="zh_CN")
    login(client, zh.email)
    page = client.get(f"/customers/{desk.guest.id}/loyalty/redeem")
    assert page.status_code == 200 and "双人茶点" in page.text and "<html lang=\"zh-CN\"" in page.text


# --- adjust ----------------------------------------------------------------------------------------------

def _adjust(client, desk, **data):
    url = f"/customers/{desk.guest.id}/loyalty/adjust"
    key = key_from(client.get(url).text)
    return client.post(url, data={"idempotency_key": key, "reason": "", **data})


def test_adjust_within_and_over_the_role_limit(client, desk):
    desk.earn("3000")  # 300 points
    login(client, desk.staff.email)
    page = client.get(f"/customers/{desk.guest.id}/loyalty/adjust").text
    assert "Your role may adjust up to 200 points at a time." in page
    assert "Goodwill budget left this month: 500 points (CN¥5.00 of CN¥5.00)." in page
    r = _adjust(client, desk, points="150", reason="missing stay from March")
    assert r.status_code == 303
    assert "Added 150 points. Balance: 450 points." in client.get(desk.page).text
    r = _adjust(client, desk, points="−120", reason="double counted")  # a typographic minus
    assert r.status_code == 303 and desk.balance() == 330
    before = len(desk.entries())
    r = _adjust(client, desk, points="300", reason="too much")
    assert r.status_code == 422 and "Your role may adjust at most 200 points at a time; ask a manager." in r.text
    assert 'value="300"' in r.text and 'value="too much"' in r.text
    r = _adjust(client, desk, points="50", reason="")
    assert r.status_code == 422 and "This field is required." in r.text
    assert "at most 200 points at a time" not in r.text
    # No reason and over the limit: both said at once, not the limit only after the reason is typed.
    r = _adjust(client, desk, points="+1,000", reason="")
    assert r.status_code == 422 and "This field is required." in r.text
    assert "Your role may adjust at most 200 points at a time; ask a manager." in r.text
    r = _adjust(client, desk, points="abc", reason="x")
    assert r.status_code == 422 and "Enter a whole number of points." in r.text
    assert len(desk.entries()) == before and desk.balance() == 330
    # A manager may do more.
    client.post("/logout")
    login(client, desk.manager.email)
    r = _adjust(client, desk, points="300", reason="complaint settled")
    assert r.status_code == 303 and desk.balance() == 630
    # ... up to the managers' limit, beyond which the owner is the one to ask.
    r = _adjust(client, desk, points="6000", reason="too much")
    assert r.status_code == 422 and "at most 5,000 points at a time; ask the owner." in r.text
    adj = desk.entries("adjust")
    assert [e.points for e in adj] == [150, -120, 300] and adj[-1].staff_user_id == desk.manager.id


def test_goodwill_within_the_monthly_budget(client, desk):
    login(client, desk.staff.email)
    for _ in range(2):
        r = _adjust(client, desk, points="200", reason="noisy room", goodwill="y")
        assert r.status_code == 303
    page = client.get(f"/customers/{desk.guest.id}/loyalty/adjust").text
    assert "Goodwill budget left this month: 100 points (CN¥1.00 of CN¥5.00)." in page
    r = _adjust(client, desk, points="200", reason="cold breakfast", goodwill="y")
    assert r.status_code == 422
    assert "This is over your goodwill budget for the month: 100 points left." in r.text
    assert desk.balance() == 400
    assert all(e.goodwill for e in desk.entries("adjust"))
    history = client.get(desk.page).text
    assert "Goodwill" in history and "noisy room" in history


def test_adjust_replays_the_same_key_once(client, desk):
    login(client, desk.staff.email)
    url = f"/customers/{desk.guest.id}/loyalty/adjust"
    key = key_from(client.get(url).text)
    for _ in range(2):
        assert client.post(url, data={"idempotency_key": key, "points": "100", "reason": "x"}).status_code == 303
    assert desk.balance() == 100
    # A key that is not one the form made is refused.
    r = client.post(url, data={"idempotency_key": "txn:x:earn", "points": "100", "reason": "x"})
    assert r.status_code == 422 and "The form expired. Please submit it again." in r.text
    assert key_from(r.text) not in (key, "txn:x:earn") and desk.balance() == 100


# --- void and reverse (managers) --------------------------------------------------------------------------

def test_manager_voids_a_redemption_and_the_points_come_back(client, desk):
    desk.earn("5000")
    reward = desk.reward(cost=120, stock=1)
    entry = desk.redeem(reward=reward)
    assert desk.balance() == 380
    login(client, desk.manager.email)
    page = client.get(desk.page).text
    void_url = f"/customers/{desk.guest.id}/loyalty/redemptions/{entry.id}/void"
    assert f'href="{void_url}"' in page
    confirm = client.get(void_url)
    assert confirm.status_code == 200 and "Tea for two" in confirm.text
    r = client.post(void_url, data={"reason": ""})
    assert r.status_code == 422 and "This field is required." in r.text and desk.balance() == 380
    r = client.post(void_url, data={"reason": "guest changed their mind"})
    assert r.status_code == 303 and r.headers["Location"].endswith(desk.page)
    page = client.get(desk.page).text
    assert "Redemption voided: 120 points given back. Balance: 500 points." in page
    assert "voided" in page and f'href="{void_url}"' not in page
    assert desk.balance() == 500
    assert desk.get(Reward, reward.id).stock == 1
    r = client.post(void_url, data={"reason": "again"})
    assert r.status_code == 422 and "This redemption was already voided." in r.text
    assert desk.balance() == 500


def test_after_a_merge_the_survivor_reverses_the_duplicates_transaction_and_a_void_pays_the_survivor(
        client, desk, make_customer):
    """The guest (a duplicate) earned and redeemed, then was merged into another record:
    the survivor's card reverses the guest's transaction with its points, and a void on the
    guest's card gives the points to the survivor, whose card it then shows."""
    from saas.customers.records import merge_customers

    tx = desk.earn("5000")  # 500
    entry = desk.redeem(points=120)
    survivor = make_customer(desk.tenant, name="王伟 (主档)")
    s = desk.session()
    merge_customers(s, survivor.id, desk.guest.id, desk.owner.id)
    s.commit()
    login(client, desk.manager.email)
    r = client.post(f"/customers/{desk.guest.id}/loyalty/redemptions/{entry.id}/void", data={"reason": "returned"})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/customers/{survivor.id}/loyalty")
    page = client.get(r.headers["Location"]).text
    assert "Redemption voided: 120 points given back. Balance: 500 points." in page
    history = page[page.index('id="tier-history"'):]
    assert "Taken over from a merged record" in history and "— → <strong>Member</strong>" in history
    points = page[page.index("loyalty-history"):page.index('id="tier-history"')]
    assert "Merged from 王伟" in points and ">merge<" not in points
    assert "Merged into 王伟 (主档)" in client.get(desk.page).text
    assert "Merged from 王伟" in client.get(f"/customers/{survivor.id}/loyalty/statement").text
    reverse_url = f"/customers/{survivor.id}/transactions/{tx.id}/reverse"
    confirm = client.get(reverse_url).text
    points = confirm[confirm.index("Points it earned"):]
    assert "<dd>500</dd>" in points[:points.index("</dl>")]
    assert client.post(reverse_url, data={"reason": "refund"}).status_code == 303
    assert desk.read(lambda s: (ledger.ledger_sum(s, survivor.id), ledger.ledger_sum(s, desk.guest.id))) == (0, 0)


def test_nothing_new_is_recorded_on_a_merged_customer(client, desk, make_customer):
    """A merged duplicate's pages stay readable (its history stays), but a visit, a
    redemption or an adjustment recorded there would be on a record searches no longer
    show: refused, with where to go instead, and the buttons are not offered."""
    from saas.customers.records import merge_customers

    desk.earn("5000")
    survivor = make_customer(desk.tenant, name="王伟 (主档)")
    s = desk.session()
    merge_customers(s, survivor.id, desk.guest.id, desk.owner.id)
    s.commit()
    login(client, desk.manager.email)
    before = desk.read(lambda s: s.scalar(select(func.count()).select_from(LedgerEntry)))
    message = "This customer was merged into another one: record this on the surviving customer."
    for url, survivor_url in ((desk.card, f"/frontdesk/{survivor.id}"), (desk.page, f"/customers/{survivor.id}/loyalty"),
                              (f"/customers/{desk.guest.id}", f"/customers/{survivor.id}")):
        page = client.get(url).text
        assert "This customer was merged into another one." in page and f'href="{survivor_url}"' in page, url
        for action in ("/transactions/new", "/loyalty/redeem", "/loyalty/adjust"):
            assert f'href="/customers/{desk.guest.id}{action}' not in page, (url, action)
    kind = desk.read(lambda s: s.scalar(select(TransactionKind.id).where(TransactionKind.code == "stay")))
    posts = {"/transactions/new": {"kind_id": str(kind), "occurred_on": DAY.isoformat(), "amount": "100",
                                   "quantity": "1", "location_id": "", "department_id": ""},
             "/loyalty/redeem": {"reward": "points", "points": "100"},
             "/loyalty/adjust": {"points": "50", "reason": "goodwill"}}
    for action, data in posts.items():
        if action != "/transactions/new":
            data["idempotency_key"] = key_from(client.get(f"/customers/{desk.guest.id}{action}").text)
        r = client.post(f"/customers/{desk.guest.id}{action}", data=data)
        assert r.status_code == 422 and html.escape(message, quote=False) in r.text, action
        assert 'value="' + (data.get("amount") or data["points"]) + '"' in r.text, action
    assert desk.read(lambda s: s.scalar(select(func.count()).select_from(LedgerEntry))) == before
    assert desk.read(lambda s: s.scalar(select(func.count()).select_from(Transaction)
                                        .where(Transaction.customer_id == desk.guest.id))) == 0


def test_manager_reverses_a_transaction_from_the_customer_page(client, desk):
    tx = desk.earn("2000")  # 200 points
    desk.redeem(points=150)
    login(client, desk.manager.email)
    detail = client.get(f"/customers/{desk.guest.id}").text
    reverse_url = f"/customers/{desk.guest.id}/transactions/{tx.id}/reverse"
    assert f'href="{reverse_url}?return=customer"' in detail
    assert f'href="/customers/{desk.guest.id}/loyalty"' in detail
    assert f'href="{reverse_url}"' in client.get(desk.page).text
    confirm = client.get(reverse_url + "?return=customer")
    assert confirm.status_code == 200 and "200" in confirm.text
    r = client.post(reverse_url + "?return=customer", data={"reason": "refunded at checkout"})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/customers/{desk.guest.id}")
    detail = client.get(f"/customers/{desk.guest.id}").text
    assert "Transaction reversed: 200 points taken back. Balance: -150 points." in detail
    assert f'href="{reverse_url}?return=customer"' not in detail and "reversed" in detail
    # The refunded money is not in the customer's total any more (the row stays, marked).
    totals = re.search(r'<p class="totals">(.*?)</p>', detail, re.S).group(1)
    assert "1 transaction" in totals and "0.00, not counting 1 reversed transaction" in totals, totals
    assert desk.get(Transaction, tx.id).reversed_on == DAY
    assert desk.balance() == -150
    page = client.get(desk.page).text
    assert "reversed" in page and "Owes 150 points" in page and "refunded at checkout" in page
    r = client.post(reverse_url, data={"reason": "twice"})
    assert r.status_code == 422 and "already reversed" in r.text
    assert desk.balance() == -150 and len(desk.entries("reverse")) == 1


def test_staff_cannot_void_or_reverse(client, desk):
    tx = desk.earn("2000")
    entry = desk.redeem(points=100)
    login(client, desk.staff.email)
    page = client.get(desk.page).text
    assert "/void" not in page and "/reverse" not in page
    assert "/reverse" not in client.get(f"/customers/{desk.guest.id}").text
    for url in (f"/customers/{desk.guest.id}/loyalty/redemptions/{entry.id}/void",
                f"/customers/{desk.guest.id}/transactions/{tx.id}/reverse"):
        assert client.get(url).status_code == 403
        assert client.post(url, data={"reason": "x"}).status_code == 403
    assert desk.balance() == 100 and not desk.entries("void") and not desk.entries("reverse")


def test_ids_of_another_customer_are_not_found(client, desk, make_customer):
    tx = desk.earn("2000")
    entry = desk.redeem(points=100)
    other = make_customer(desk.tenant, name="Other")
    login(client, desk.manager.email)
    assert client.get(f"/customers/{other.id}/loyalty/redemptions/{entry.id}/void").status_code == 404
    assert client.post(f"/customers/{other.id}/transactions/{tx.id}/reverse",
                       data={"reason": "x"}).status_code == 404
    assert desk.balance() == 100


# --- the loyalty page ------------------------------------------------------------------------------------

def test_loyalty_page_lists_the_history_with_balances(client, desk):
    desk.earn("3000", DAY - dt.timedelta(days=3))  # +300
    desk.redeem(reward=desk.reward(cost=120))       # -120
    login(client, desk.staff.email)
    r = client.get(desk.page)
    assert r.status_code == 200
    rows = r.text[r.text.index("loyalty-history"):]
    assert rows.index("Redeemed") < rows.index("Earned")  # newest first
    assert "Tea for two" in rows and "+300" in rows and "-120" in rows
    assert ">180<" in rows and ">300<" in rows  # the balance after each entry
    assert "Stay of Mar 7, 2026, CN¥3,000.00" in rows
    assert "Redeem" in r.text and "Adjust" in r.text
    assert f'href="/customers/{desk.guest.id}/loyalty/statement"' in r.text  # the statement, from here too
    assert client.get(f"/customers/{desk.guest.id}/loyalty/statement").status_code == 200
    assert s_count(desk) == 2


def s_count(desk) -> int:
    return int(desk.read(lambda s: s.scalar(select(func.count()).select_from(LedgerEntry))))


def test_pending_points_say_when_they_become_redeemable(client, desk, write_session):
    s = write_session(desk.tenant)
    row = s.scalar(select(ProgrammeSection).where(ProgrammeSection.section == "loyalty"))
    row.data = {**PROGRAMME, "pending_days": 7}
    row.updated_at = clock.now_utc()
    s.commit()
    desk.earn("1000")  # 100 points, redeemable a week later
    login(client, desk.staff.email)
    day = format_date(DAY + dt.timedelta(days=7), "medium", locale="en")
    assert f"100 pending, the first redeemable on {day}" in client.get(desk.card, headers={"HX-Request": "true"}).text
    assert f"100 pending, the first redeemable on {day}" in client.get(desk.page).text
    # The tablet's dialogs say it too, above the form where the points would be spent.
    for dialog in ("redeem", "adjust"):
        text = client.get(f"{desk.page}/{dialog}").text
        line = text[text.index('class="loyalty-dialog-balance"'):]
        assert f"100 pending, the first redeemable on {day}" in line[:line.index("</p>")], dialog


def test_a_reversal_that_carried_an_upgrade_takes_it_back_and_the_tier_history_says_so(client, desk, add_member):
    desk.earn("12000")  # 1,200 points: Silver
    big = desk.earn("40000")  # 4,000 more: Gold
    login(client, desk.manager.email)
    page = client.get(desk.page).text
    history = re.search(r'<section class="card" id="tier-history">(.*?)</section>', page, re.S).group(1)
    assert history.count('class="tier-change tier-upgrade"') == 3  # none -> Member -> Silver -> Gold
    assert "Silver → <strong>Gold</strong>" in history
    confirm = client.get(f"/customers/{desk.guest.id}/transactions/{big.id}/reverse")
    assert "A tier upgrade this transaction carried is taken back too" in confirm.text
    r = client.post(f"/customers/{desk.guest.id}/transactions/{big.id}/reverse", data={"reason": "cancelled"})
    assert r.status_code == 303
    page = client.get(r.headers["Location"]).text
    page = html.unescape(re.sub(r"\s+", " ", page))
    assert ("Transaction reversed: 4,000 points taken back. Balance: 1,200 points. The upgrade to Gold it "
            "carried is taken back: the tier is Silver again.") in page
    history = re.search(r'<section class="card" id="tier-history">(.*?)</section>', page, re.S).group(1)
    undo = re.search(r'<tr class="tier-change tier-undo">(.*?)</tr>', history, re.S).group(1)
    assert "Upgrade taken back" in undo and "Gold → <strong>Silver</strong>" in undo
    assert "40,000.00" in undo  # the reversed transaction, named
    assert desk.read(lambda s: ledger.account(s, desk.guest.id).tier_code) == "silver"
    # In Chinese too.
    login(client, add_member(desk.tenant, "staff", language="zh_CN").email)
    zh = client.get(desk.page).text
    assert "等级变动" in zh and "升级已撤回" in zh and "金卡会员 → <strong>银卡会员</strong>" in zh
