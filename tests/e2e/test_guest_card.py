"""The front-desk guest card in a real browser on a 1024x768 tablet.

A staff member logs in, types part of a phone number into the one search box, opens the
guest card, and sees the greeting, badges and big buttons without scrolling; the page
does not scroll sideways at 768 px wide; a preference added from the card shows on it.
Screenshots go to tests/e2e/artifacts/guest-card-*.png.
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

STAFF_EMAIL = "frontdesk@example.com"

SEED = SEED_TENANT_AND_STAFF + textwrap.dedent("""
    from saas.customers.models import Preference

    today = clock.today(tenant.timezone)
    birthday = dt.date(1978, today.month, 28 if (today.month, today.day) == (2, 29) else today.day)
    guest = Customer(name="王伟", address_as="王先生", phone="+8613800138000", card_number="VIP-0001",
                     plate_number="沪A12345", classification="important", birthday=birthday,
                     consent_phone=True, consent_sms=True, company="Harbour Trading Co.")
    other = Customer(name="王芳", address_as="王女士", phone="+8613900001111")
    s.add_all([guest, other])
    s.flush()
    location = s.scalar(select(Location))
    kind = s.scalar(select(TransactionKind).where(TransactionKind.is_default.is_(True)))
    now = clock.now_utc()
    for i, (cat, key, value) in enumerate([
            ("room", "Pillow", "Firm, two of them"), ("room", "Floor", "High, away from the lift"),
            ("food", "Breakfast", "Congee, no coriander"), ("communication", "Contact", "WeChat, not calls"),
            ("product", "Lotion", "Lavender in the bathroom"), ("other", "Newspaper", "South China Morning Post"),
            ("food", "Tea", "Longjing")]):
        s.add(Preference(customer_id=guest.id, category=cat, key=key, value=value, recorded_by_id=owner.id,
                         location_id=location.id, recorded_at=now - dt.timedelta(days=10 - i)))
    s.add(Transaction(customer_id=guest.id, kind_id=kind.id, location_id=location.id, staff_user_id=owner.id,
                      occurred_on=today - dt.timedelta(days=21), amount=Decimal("2560.00"), quantity=2))
    s.commit()
    s.close()
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a fresh, migrated and seeded SQLite database; yields the base URL."""
    with serve(tmp_path_factory.mktemp("e2e-guest-card"), "guest-card", SEED, (PASSWORD, STAFF_EMAIL)) as base:
        yield base


def test_staff_finds_a_guest_and_adds_a_preference_on_a_tablet(page, server):
    from playwright.sync_api import expect

    shots = Shots(page, "guest-card")
    login(page, server, STAFF_EMAIL, PASSWORD)
    expect(page.locator("main")).to_contain_text("Front desk")

    # The front desk is in the menu for every role.
    page.locator("nav.mainnav").get_by_role("link", name="Front desk").click()
    expect(page).to_have_url(re.compile(r"/frontdesk$"))
    search = page.locator("#fd-q")
    expect(search).to_be_focused()
    shots("empty")

    # Part of a phone number, typed key by key: active search shows big rows.
    search.press_sequentially("13800", delay=60)
    row = page.locator(".fd-result").first
    expect(row).to_contain_text("王先生")
    expect(page.locator(".fd-result")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/frontdesk\?q=13800$"))
    assert page.locator(".fd-result").first.bounding_box()["height"] >= 44
    shots("results")

    # Choosing the row swaps the card in (htmx), with its own address.
    row.click()
    expect(page).to_have_url(re.compile(r"/frontdesk/[0-9a-f-]{36}$"))
    card = page.locator(".guest-card")
    expect(card).to_be_visible()
    expect(page.locator(".gc-greeting")).to_have_text("王先生")
    badges = page.locator(".gc-badges")
    expect(badges).to_contain_text("Important customer")
    expect(badges).to_contain_text("Birthday this week")
    expect(card).to_contain_text("Member")  # the base tier, before any points
    expect(card).to_contain_text("No open complaints")
    expect(card).to_contain_text("Longjing")  # the latest six preferences
    expect(card).not_to_contain_text("Firm, two of them")
    expect(card).to_contain_text("+1 more")
    expect(card.locator(".gc-last-visit")).to_contain_text("¥2,560.00")
    buttons = [card.get_by_role("link", name=n) for n in ("Record visit", "Add preference", "Log contact")]
    shots("card-1024")

    # Everything fits the 768 px tall screen: no scrolling to reach the buttons.
    for element in [page.locator(".gc-greeting"), badges, *buttons, card]:
        expect(element).to_be_visible()
        assert bottom(element) <= TABLET["height"], (element, bottom(element))
    for button in buttons:
        box = button.bounding_box()
        assert box["width"] >= 44 and box["height"] >= 44, box
    small = page.evaluate(SMALL_TARGETS_JS)
    assert not small, f"touch targets under 44x44 px: {small}"
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")

    # Portrait (768 px wide): no sideways scrolling.
    page.set_viewport_size(PORTRAIT)
    no_sideways(page)
    shots("card-768")
    page.set_viewport_size(TABLET)

    # Without JavaScript's swap (a reload) the same card is a whole page.
    page.reload()
    expect(page.locator(".gc-greeting")).to_have_text("王先生")
    assert bottom(page.locator(".gc-actions")) <= TABLET["height"]

    # Add a preference from the card; the form returns to the card.
    page.locator(".guest-card").get_by_role("link", name="Add preference").click()
    expect(page).to_have_url(re.compile(r"/preferences/new\?return=card$"))
    page.select_option("#category", "food")
    page.fill("#key", "Fruit")
    page.fill("#value", "Mango on arrival")
    shots("add-preference")
    page.get_by_role("button", name="Save preference").click()
    expect(page).to_have_url(re.compile(r"/frontdesk/[0-9a-f-]{36}$"))
    expect(page.locator(".flash-success")).to_be_visible()
    expect(page.locator(".gc-prefs")).to_contain_text("Mango on arrival")
    # The newest is listed first.
    expect(page.locator(".gc-pref-list li").first).to_contain_text("Mango on arrival")
    # Even under the flash message the buttons stay on the screen.
    assert bottom(page.locator(".gc-actions")) <= TABLET["height"]
    shots("card-after-preference")
