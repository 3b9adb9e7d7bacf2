"""Award and redeem at the front desk in a real browser on a 1024x768 tablet.

A staff member opens a guest's card, records a visit (the points are awarded and the
balance shown), opens the redeem dialog, redeems a reward and sees the new balance; the
card still fits the screen, the page never scrolls sideways at 768 px, every target is
at least 44x44 px. The same in Chinese. Screenshots: tests/e2e/artifacts/loyalty-*.png.
"""
from __future__ import annotations

import re
import textwrap

import pytest

from tests.conftest import PASSWORD
from tests.e2e.conftest import (
    PORTRAIT,
    SEED_TENANT_AND_STAFF,
    SMALL_TARGETS_JS,
    TABLET,
    Shots,
    bottom,
    login,
    no_sideways,
    serve,
)

pytestmark = pytest.mark.xdist_group("browser")

STAFF_EMAIL = "desk@example.com"

SEED = SEED_TENANT_AND_STAFF + textwrap.dedent("""
    from saas.loyalty import services as loyalty
    from saas.loyalty.programme import add_months

    guest = Customer(name="王伟", address_as="王先生", phone="+8613800138000", card_number="VIP-0001",
                     classification="important", consent_phone=True, consent_sms=True)
    s.add(guest)
    s.flush()
    today = clock.today(tenant.timezone)
    location = s.scalar(select(Location))
    kind = s.scalar(select(TransactionKind).where(TransactionKind.code == "stay"))
    # Points from two earlier stays: one whose points expire within 90 days, one recent.
    for on, amount, nights in ((add_months(today, -23), "800.00", 1), (today - dt.timedelta(days=21), "2560.00", 2)):
        tx = Transaction(customer_id=guest.id, kind_id=kind.id, location_id=location.id, staff_user_id=owner.id,
                         occurred_on=on, amount=Decimal(amount), quantity=nights)
        s.add(tx)
        s.flush()
        loyalty.award(s, tx, guest, owner.id, on)
    # A catalogue of its own, whatever the preset's is.
    for reward in loyalty.list_rewards(s):
        reward.active = False
    for code, zh, en, cost, stock in (("e2e-breakfast", "双人早餐", "Breakfast for two", 300, 20),
                                      ("e2e-late-checkout", "延迟退房", "Late check-out", 150, None),
                                      ("e2e-spa", "水疗体验券", "Spa voucher", 2000, 5)):
        loyalty.save_reward(s, {"code": code, "name_zh": zh, "name_en": en, "points_cost": str(cost),
                                "stock": "" if stock is None else str(stock)})
    # Two more guests for the panel's fuller states: Gold with a tier to keep and points
    # expiring; a refund after the points were spent (the account owes points).
    birthday = dt.date(1980, today.month, 28 if (today.month, today.day) == (2, 29) else today.day)
    gold = Customer(name="陈静", address_as="陈女士", phone="+8613911112222", classification="important",
                    birthday=birthday, company="Harbour Trading Co.", consent_phone=True)
    owes = Customer(name="赵强", address_as="赵先生", phone="+8613733334444")
    s.add_all([gold, owes])
    s.flush()
    from saas.customers.models import Preference
    for cat, key, value in [("room", "Pillow", "Firm, two of them"), ("room", "Floor", "High, away from the lift"),
                            ("food", "Breakfast", "Congee, no coriander"), ("communication", "Contact", "WeChat"),
                            ("product", "Lotion", "Lavender in the bathroom"), ("food", "Tea", "Longjing"),
                            ("other", "Newspaper", "South China Morning Post")]:
        s.add(Preference(customer_id=gold.id, category=cat, key=key, value=value, recorded_by_id=owner.id,
                         location_id=location.id))

    def stay(customer, on, amount):
        tx = Transaction(customer_id=customer.id, kind_id=kind.id, location_id=location.id, staff_user_id=owner.id,
                         occurred_on=on, amount=Decimal(amount), quantity=1)
        s.add(tx)
        s.flush()
        loyalty.award(s, tx, customer, owner.id, on)
        return tx

    stay(gold, add_months(today, -23), "800.00")
    stay(gold, today - dt.timedelta(days=200), "30000.00")
    stay(gold, today - dt.timedelta(days=100), "20000.00")
    refunded = stay(owes, today - dt.timedelta(days=10), "2000.00")
    late = loyalty.get_reward_by_code(s, "e2e-late-checkout")
    from saas.loyalty import ledger
    ledger.redeem(s, loyalty.programme_of(s), owes, today - dt.timedelta(days=9), reward=late, staff_user_id=owner.id)
    loyalty.reverse(s, refunded, owner.id, "refund", today)
    s.commit()
    s.close()
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("e2e-loyalty"), "loyalty", SEED, (PASSWORD, STAFF_EMAIL)) as base:
        yield base


def _fits(page) -> None:
    """The guest card's buttons are on the 768 px tall screen; targets are big enough;
    no sideways scrolling."""
    assert bottom(page.locator(".gc-actions")) <= TABLET["height"], bottom(page.locator(".gc-actions"))
    small = page.evaluate(SMALL_TARGETS_JS)
    assert not small, f"touch targets under 44x44 px: {small}"
    no_sideways(page)


def _portrait(page, shots, name: str) -> None:
    page.set_viewport_size(PORTRAIT)
    no_sideways(page)
    shots(name)
    page.set_viewport_size(TABLET)


def _login(page, server) -> None:
    from playwright.sync_api import expect

    login(page, server, STAFF_EMAIL, PASSWORD)
    # The language is the user's own (kept from an earlier test): start in English.
    if page.locator("html").get_attribute("lang") != "en":
        page.locator(".langswitch").get_by_role("button", name="English").click()
        expect(page.locator("html")).to_have_attribute("lang", "en")


def _open_card(page) -> None:
    from playwright.sync_api import expect

    page.locator("nav.mainnav").get_by_role("link", name=re.compile("Front desk|前台")).click()
    page.locator("#fd-q").press_sequentially("13800", delay=40)
    page.locator(".fd-result").first.click()
    expect(page).to_have_url(re.compile(r"/frontdesk/[0-9a-f-]{36}$"))


def test_staff_awards_and_redeems_points_on_a_tablet(page, server):
    from playwright.sync_api import expect

    shots = Shots(page, "loyalty-en")
    _login(page, server)
    _open_card(page)
    panel = page.locator(".loyalty-panel")
    # 80 + 20 (a night) earned 23 months ago, 256 + 40 three weeks ago.
    expect(panel).to_contain_text("396")
    expect(panel).to_contain_text("Member")
    expect(panel).to_contain_text("Needs 704 more points to reach Silver")
    expect(panel).to_contain_text("100 points expire on")
    expect(panel).to_contain_text("worth CN¥3.96")
    _fits(page)
    shots("card")
    _portrait(page, shots, "card-768")

    # Record a visit: the points are awarded at once.
    page.locator(".guest-card").get_by_role("link", name="Record visit").click()
    expect(page).to_have_url(re.compile(r"/transactions/new\?return=card$"))
    page.fill("#amount", "1280")
    page.get_by_role("button", name="Record transaction").click()
    expect(page).to_have_url(re.compile(r"/frontdesk/[0-9a-f-]{36}$"))
    flash = page.locator(".flash-success")
    expect(flash).to_contain_text("Earned 148 points; balance 544.")
    expect(panel.locator(".loyalty-balance")).to_contain_text("544")
    _fits(page)
    shots("card-after-visit")

    # Redeem a reward.
    page.locator(".guest-card").get_by_role("link", name="Redeem points").click()
    expect(page).to_have_url(re.compile(r"/loyalty/redeem\?return=card$"))
    expect(page.locator(".loyalty-dialog-balance")).to_contain_text("544 redeemable")
    expect(page.locator(".loyalty-choice", has_text="Spa voucher")).to_contain_text("1,456 points short")
    no_sideways(page)
    assert not page.evaluate(SMALL_TARGETS_JS)
    # Points to pay with show only when paying with points.
    expect(page.locator("#points")).to_be_hidden()
    page.locator(".loyalty-choice", has_text="Pay with points").click()
    expect(page.locator("#points")).to_be_visible()
    page.locator("#points").press_sequentially("500", delay=40)
    expect(page.locator("#loyalty-cash")).to_have_text(re.compile(r"500 points pay CN¥5\.00"))
    shots("redeem-points")
    _portrait(page, shots, "redeem-768")
    page.locator(".loyalty-choice", has_text="Breakfast for two").click()
    expect(page.locator("#points")).to_be_hidden()
    page.fill("#note", "Room 1208")
    shots("redeem-reward")
    page.get_by_role("button", name="Redeem", exact=True).click()
    expect(page).to_have_url(re.compile(r"/frontdesk/[0-9a-f-]{36}$"))
    expect(page.locator(".flash-success")).to_contain_text("Redeemed 300 points for Breakfast for two. Balance: 244 points.")
    expect(panel.locator(".loyalty-balance")).to_contain_text("244")
    _fits(page)
    shots("card-after-redeem")

    # A reward the customer is short for is shown, not offered; more points than the
    # balance are refused beside the points, with the typed values kept.
    page.locator(".guest-card").get_by_role("link", name="Redeem points").click()
    expect(page.locator(".loyalty-choice", has_text="Spa voucher").locator("input")).to_be_disabled()
    page.locator(".loyalty-choice", has_text="Pay with points").click()
    page.locator("#points").fill("2000")
    page.fill("#note", "birthday")
    page.get_by_role("button", name="Redeem", exact=True).click()
    expect(page.locator("#points-errors")).to_contain_text("Not enough points: 244 can be redeemed, 2,000 are needed.")
    expect(page.locator("#note")).to_have_value("birthday")
    expect(page.locator("#points")).to_have_value("2000")
    shots("redeem-refused")

    # The loyalty page: summary and history.
    page.get_by_role("link", name=re.compile("王先生")).click()
    page.locator(".loyalty-panel").get_by_role("link", name="Loyalty details").click()
    expect(page).to_have_url(re.compile(r"/customers/[0-9a-f-]{36}/loyalty$"))
    history = page.locator(".loyalty-history tbody tr")
    expect(history.first).to_contain_text("Breakfast for two")
    expect(history.first).to_contain_text("Room 1208")
    expect(history).to_have_count(4)
    no_sideways(page)
    assert not page.evaluate(SMALL_TARGETS_JS)
    shots("page", full_page=True)
    _portrait(page, shots, "page-768")


def test_the_same_in_chinese(page, server):
    from playwright.sync_api import expect

    shots = Shots(page, "loyalty-zh")
    _login(page, server)
    page.locator(".langswitch").get_by_role("button", name="中文").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    _open_card(page)
    panel = page.locator(".loyalty-panel")
    expect(panel).to_contain_text("普通会员")
    _fits(page)
    shots("card")
    _portrait(page, shots, "card-768")
    page.locator(".gc-actions a").nth(1).click()
    expect(page).to_have_url(re.compile(r"/loyalty/redeem\?return=card$"))
    expect(page.locator(".loyalty-choice", has_text="双人早餐")).to_be_visible()
    no_sideways(page)
    shots("redeem")
    _portrait(page, shots, "redeem-768")
    page.goto(page.url.replace("/redeem?return=card", ""))
    no_sideways(page)
    shots("page", full_page=True)
    page.goto(page.url + "/adjust")
    shots("adjust")


def test_fuller_panels_fit_the_card(page, server):
    """Gold with perks, a tier to keep and points expiring; an account that owes points."""
    from playwright.sync_api import expect

    shots = Shots(page, "loyalty-states")
    _login(page, server)
    page.goto(server + "/frontdesk?q=1391111")
    page.locator(".fd-result").first.click()
    panel = page.locator(".loyalty-panel")
    expect(panel).to_contain_text("Gold")
    expect(panel).to_contain_text("Room upgrade when available")
    expect(panel).to_contain_text("Needs 9,760 more points to reach Platinum")
    expect(panel).to_contain_text(re.compile(r"Needs 1,780 more points by .+ to keep Gold"))
    expect(panel).to_contain_text("100 points expire on")
    _fits(page)
    shots("gold")
    _portrait(page, shots, "gold-768")
    # The fullest card: badges, six preferences, and a flash message above it.
    page.locator(".guest-card").get_by_role("link", name="Record visit").click()
    page.fill("#amount", "100")
    page.get_by_role("button", name="Record transaction").click()
    expect(page.locator(".flash-success")).to_contain_text("Earned")
    expect(page.locator(".gc-badges")).to_contain_text("Birthday this week")
    _fits(page)
    shots("gold-after-visit")

    page.goto(server + "/frontdesk?q=1373333")
    page.locator(".fd-result").first.click()
    expect(panel.locator(".loyalty-owed")).to_contain_text("Owes 150 points")
    expect(panel.locator(".loyalty-owed")).to_contain_text("redemptions are refused until the balance is positive again")
    expect(panel.locator(".loyalty-balance")).to_contain_text("-150")
    _fits(page)
    shots("owes")
    page.locator(".guest-card").get_by_role("link", name="Redeem points").click()
    expect(page.locator(".loyalty-choice", has_text="Late check-out").locator("input")).to_be_disabled()
    page.locator("#points").fill("500")  # paying with points is what is left to choose (at least 500)
    page.get_by_role("button", name="Redeem", exact=True).click()
    expect(page.locator(".flash-error").last).to_contain_text("The account owes 150 points")
    shots("owes-redeem-refused")


def test_manager_voids_a_redemption_and_sees_reverse_buttons(page, server):
    """The owner (manager and above) has Void and Reverse on the loyalty page; the history
    table fits a portrait tablet."""
    from playwright.sync_api import expect

    shots = Shots(page, "loyalty-manager")
    login(page, server, "owner@example.com", PASSWORD)
    page.goto(server + "/frontdesk?q=1373333")
    page.locator(".fd-result").first.click()
    page.locator(".loyalty-panel").get_by_role("link", name="Loyalty details").click()
    rows = page.locator(".loyalty-history tbody tr")
    redemption = rows.filter(has_text="Redeemed")
    expect(redemption.get_by_role("link", name="Void")).to_be_visible()
    expect(page.get_by_role("link", name="Reverse")).to_have_count(0)  # already reversed
    shots("owes-page")
    redemption.get_by_role("link", name="Void").click()
    expect(page).to_have_url(re.compile(r"/redemptions/[0-9a-f-]{36}/void$"))
    page.fill("#reason", "Late check-out not available after all")
    no_sideways(page)
    shots("void")
    page.get_by_role("button", name="Void redemption").click()
    expect(page).to_have_url(re.compile(r"/customers/[0-9a-f-]{36}/loyalty$"))
    expect(page.locator(".flash-success")).to_contain_text("Redemption voided: 150 points given back. Balance: 0 points.")
    expect(rows.filter(has_text="Redeemed")).to_contain_text("voided")
    shots("after-void")

    page.goto(server + "/frontdesk?q=1391111")
    page.locator(".fd-result").first.click()
    page.locator(".loyalty-panel").get_by_role("link", name="Loyalty details").click()
    reverse = page.locator(".loyalty-history").get_by_role("link", name="Reverse")
    expect(reverse.first).to_be_visible()
    assert reverse.count() >= 3  # one per stay (four after the visit another test records)
    page.set_viewport_size(PORTRAIT)
    no_sideways(page)
    assert page.evaluate("(() => { const w = document.querySelector('.table-wrap');"
                         " return w.scrollWidth <= w.clientWidth; })()"), "the history table scrolls sideways"
    assert not page.evaluate(SMALL_TARGETS_JS)
    shots("gold-page-768", full_page=True)
    page.set_viewport_size(TABLET)
    reverse.first.click()
    expect(page).to_have_url(re.compile(r"/transactions/[0-9a-f-]{36}/reverse$"))
    shots("reverse")
