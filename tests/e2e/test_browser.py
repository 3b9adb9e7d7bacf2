"""The browser test: a real Chromium drives the app served by gunicorn, with real CSRF.

An owner signs a hotel up in Chinese, switches to English, invites a staff member and
logs out; the staff member joins through the one-time link, sees no owner menus, and the
pages fit a tablet (1024 and 768 px wide) without scrolling sideways. Full-page
screenshots of every step go to tests/e2e/artifacts/ for a human to look at.
"""
from __future__ import annotations

import re

import pytest

from tests.conftest import PASSWORD
from tests.e2e.conftest import ARTIFACTS, PORTRAIT, TABLET, serve

pytestmark = pytest.mark.xdist_group("browser")

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a fresh, migrated SQLite database; yields the base URL."""
    with serve(tmp_path_factory.mktemp("e2e"), "signup") as base:
        yield base


class Shots:
    """Full-page screenshots, numbered in the order taken."""

    def __init__(self, page, prefix: str):
        self.page, self.prefix, self.n = page, prefix, 0
        for old in ARTIFACTS.glob(f"{prefix}-*.png"):
            old.unlink()

    def __call__(self, name: str) -> None:
        self.n += 1
        self.page.screenshot(path=ARTIFACTS / f"{self.prefix}-{self.n:02d}-{name}.png", full_page=True)


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def assert_fits(page, shots: Shots, name: str) -> None:
    """The page fits 1024 and 768 px without sideways scrolling; screenshots of both."""
    for size, label in ((TABLET, "1024"), (PORTRAIT, "768")):
        page.set_viewport_size(size)
        shots(f"{name}-{label}")
        width = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert no_sideways_scroll(page), f"{name} scrolls sideways at {label} px: {width}"
    page.set_viewport_size(TABLET)


# Controls a finger must hit: at least 44 x 44 CSS px (WCAG 2.5.5).
SMALL_TARGETS_JS = """() => {
  const sel = '.mainnav a, .topbar-right a, .btn, .linklike, button, select, textarea,'
            + ' input:not([type=hidden]):not([type=checkbox]):not([type=radio]), label.check';
  return [...document.querySelectorAll(sel)].filter(el => el.offsetParent !== null).map(el => {
    const r = el.getBoundingClientRect();
    return {el: el.outerHTML.slice(0, 80), w: Math.round(r.width), h: Math.round(r.height)};
  }).filter(x => x.w < 44 || x.h < 44);
}"""


def assert_touch_targets(page, name: str) -> None:
    small = page.evaluate(SMALL_TARGETS_JS)
    assert not small, f"touch targets under 44x44 px on {name}: {small}"


LANG_HINT = ("<html lang> is stale: a boosted (htmx) navigation swaps only <body>, so the "
             "new page's lang must be carried over (saas/static/js/app.js)")


def nav(page):
    return page.locator("nav.mainnav")


def test_signup_shows_errors_for_an_empty_form(page, server):
    from playwright.sync_api import expect

    shots = Shots(page, "signup-errors")
    page.goto(server + "/signup")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    with page.expect_response(lambda r: r.url.endswith("/signup") and r.request.method == "POST") as resp:
        page.get_by_role("button", name="Create my business").click()
    assert resp.value.status == 422
    fields = page.locator(".field.has-error")
    expect(fields.first).to_be_visible()
    for name in ("business_name", "owner_name", "email", "password"):
        field = page.locator(f".field.has-error:has(#{name})")
        expect(field.locator(".errors li").first).to_be_visible()
        expect(page.locator(f"#{name}")).to_have_attribute("aria-invalid", "true")
    # The message is text, not only a red border.
    expect(page.locator("#email-errors")).to_contain_text(re.compile(r"\w{3,}"))
    color = page.locator("#email-errors").evaluate("el => getComputedStyle(el).color")
    assert color != page.locator("main").evaluate("el => getComputedStyle(el).color")
    assert_touch_targets(page, "signup with errors")
    assert_fits(page, shots, "signup-empty-submitted")


def test_owner_invites_staff_who_joins_on_a_tablet(page, server):
    from playwright.sync_api import expect

    shots = Shots(page, "flow")
    page.goto(server + "/signup")
    assert_fits(page, shots, "signup")

    # Keyboard users see where they are.
    page.locator("#business_name").focus()
    page.keyboard.press("Tab")
    outline = page.evaluate("(() => { const s = getComputedStyle(document.activeElement);"
                            " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()")
    assert outline[0] != "none" and outline[1] >= 2, outline

    # 1. An owner signs a hotel up, in Chinese.
    page.fill("#business_name", "海港酒店 Harbour Hotel")
    page.select_option("#industry", "hotel")
    page.fill("#owner_name", "李伟")
    page.fill("#email", "owner@example.com")
    page.fill("#password", PASSWORD)
    page.select_option("#language", "zh_CN")
    page.get_by_role("button", name="Create my business").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.locator("html"), LANG_HINT).to_have_attribute("lang", "zh-CN")
    expect(nav(page)).to_contain_text("概览")
    expect(page.locator("main h1")).to_have_text("海港酒店 Harbour Hotel")
    expect(page.locator(".flash-success")).to_be_visible()
    assert_touch_targets(page, "owner dashboard")
    assert_fits(page, shots, "owner-dashboard-zh")

    # Real CSRF: a POST without a token is refused; htmx's X-CSRFToken header alone passes.
    status = page.evaluate("""async () => (await fetch('/language', {method: 'POST',
        body: new URLSearchParams({lang: 'zh_CN'}), redirect: 'manual'})).status""")
    assert status == 400
    status = page.evaluate("""() => new Promise(resolve => {
        document.body.addEventListener('htmx:afterRequest', e => resolve(e.detail.xhr.status), {once: true});
        htmx.ajax('POST', '/language', {source: document.body, swap: 'none',
                                        values: {lang: 'zh_CN', next: '/dashboard'}});
    })""")
    assert status == 200, ("htmx's X-CSRFToken header was refused: <body hx-headers> still holds "
                           "the token of the page before the login, which rotated it")

    # 2. Switch to English with the buttons in the top bar.
    page.locator(".langswitch").get_by_role("button", name="English").click()
    expect(nav(page)).to_contain_text("Dashboard")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator(".langswitch button[aria-current]")).to_have_text("English")
    assert_fits(page, shots, "owner-dashboard-en")

    # 3. Invite a staff member; the one-time link shows in an input.
    nav(page).get_by_role("link", name="Staff").click()
    expect(page).to_have_url(re.compile(r"/settings/staff$"))
    page.fill("#email", "staff@example.com")
    page.select_option("#role", "staff")
    page.get_by_role("button", name="Create invitation").click()
    link_box = page.locator("input.copy")
    expect(link_box).to_be_visible()
    link = link_box.input_value()
    assert re.match(re.escape(server) + r"/invite/\S+$", link), link
    expect(page.locator(".table").last).to_contain_text("staff@example.com")
    assert_touch_targets(page, "staff")
    assert_fits(page, shots, "staff-invited")

    # 4. Log out.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(nav(page)).to_have_count(0)
    assert_fits(page, shots, "owner-logged-out")

    # 5. The staff member opens the link, gives a name and a password, and joins.
    page.goto(link)
    expect(page.locator("main h1")).to_contain_text("海港酒店 Harbour Hotel")
    assert_fits(page, shots, "invitation")
    page.fill("#name", "王芳")
    page.fill("#password", "front desk tablet 7")
    page.get_by_role("button", name="Join").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    # The staff member has no language of their own yet: the hotel's (Chinese) applies.
    expect(page.locator("html"), LANG_HINT).to_have_attribute("lang", "zh-CN")
    expect(nav(page)).to_contain_text("概览")
    expect(nav(page)).to_contain_text("客户")
    expect(page.locator(".topbar-right")).to_contain_text("退出登录")
    expect(page.locator(".who")).to_contain_text("王芳")
    # Staff see no owner menus.
    expect(nav(page).locator("a[href='/settings']")).to_have_count(0)
    expect(nav(page).locator("a[href='/settings/staff']")).to_have_count(0)
    for hidden in ("Settings", "设置", "Staff", "员工"):
        expect(nav(page)).not_to_contain_text(hidden)
    assert_touch_targets(page, "staff dashboard")
    assert_fits(page, shots, "staff-dashboard")

    # 6. Log out: back at the login page.
    page.locator(".topbar-right form button[type=submit]").last.click()
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("#email")).to_be_visible()
    expect(page.locator(".flash-info")).to_be_visible()
    assert_fits(page, shots, "staff-logged-out")


def test_owner_pages_fit_a_tablet(page, server):
    """Every page an owner reaches from the menus fits 1024 and 768 px, with big targets."""
    from playwright.sync_api import expect

    shots = Shots(page, "owner-pages")
    page.goto(server + "/signup")
    page.fill("#business_name", "Riverside Motors")
    page.select_option("#industry", "dealership")
    page.fill("#owner_name", "Chen Jie")
    page.fill("#email", "chen@example.com")
    page.fill("#password", PASSWORD)
    page.select_option("#language", "en")
    page.get_by_role("button", name="Create my business").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))

    paths = ["/customers", "/settings", "/account"]
    page.goto(server + "/settings")
    for href in page.locator("main a.btn").evaluate_all("els => els.map(a => a.getAttribute('href'))"):
        if href.startswith("/") and href not in paths:
            paths.append(href)
    for path in paths:
        response = page.goto(server + path)
        assert response is not None and response.status == 200, (path, response and response.status)
        assert_touch_targets(page, path)
        assert_fits(page, shots, path.strip("/").replace("/", "-"))
        # A table much wider than the card scrolls inside the card, not the page.
        if page.locator(".table").count():
            page.set_viewport_size(PORTRAIT)
            page.locator(".table").first.evaluate(
                "t => t.querySelector('tr').insertAdjacentHTML('beforeend',"
                " '<td style=\"white-space:nowrap\">' + 'wide '.repeat(400) + '</td>')")
            assert no_sideways_scroll(page), f"a wide table makes {path} scroll sideways"
            page.set_viewport_size(TABLET)
