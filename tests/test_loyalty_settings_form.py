"""The loyalty programme as a form in Settings (owner only): the everyday keys of the
[loyalty] section, the tiers as rows; the keys the form does not show stay as saved."""
from __future__ import annotations

import html
import re
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from saas.loyalty import services as loyalty
from saas.settings import services
from tests.conftest import login

URL = "/settings/programme/loyalty/form"


@pytest.fixture
def owner(client, make_tenant):
    """A hotel tenant whose owner is logged in with ``client``."""
    tenant, user = make_tenant(industry="hotel")
    assert login(client, user.email).status_code == 303
    return tenant


class _Values(HTMLParser):
    """What a browser would submit from the page's loyalty form (ticked boxes only)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.values: dict[str, str] = {}
        self.fields: set[str] = set()
        self._select: str | None = None
        self._textarea: str | None = None
        self._in_form = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._in_form = a.get("action") == URL
        if not self._in_form:
            return
        if tag == "input" and a.get("name"):
            self.fields.add(a["name"])
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.values[a["name"]] = a.get("value") or "y"
            else:
                self.values[a["name"]] = a.get("value") or ""
        elif tag == "select":
            self._select = a.get("name")
            self.fields.add(self._select)
        elif tag == "textarea" and a.get("name"):
            self._textarea = a["name"]
            self.fields.add(self._textarea)
            self.values[self._textarea] = ""
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value")

    def handle_data(self, data):
        if self._textarea:
            self.values[self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "textarea":  # a browser drops the newline that opens the text
            text = self.values[self._textarea]
            self.values[self._textarea] = text[2:] if text.startswith("\r\n") else text.removeprefix("\n")
            self._textarea = None
        if tag == "select":
            self._select = None
        if tag == "form":
            self._in_form = False


def form_values(page: str) -> dict[str, str]:
    parser = _Values()
    parser.feed(page)
    return parser.values


def section(tenant_session, tenant) -> dict:
    return services.programme_sections(tenant_session(tenant))["loyalty"]


def test_the_loyalty_page_links_to_the_form(client, owner):
    page = client.get("/settings/programme/loyalty").text
    assert f'href="{URL}"' in page
    assert "Edit with a form" in page


def test_the_form_shows_the_hotel_preset(client, owner):
    r = client.get(URL)
    assert r.status_code == 200
    v = form_values(r.text)
    assert v["points_per_currency_unit"] == "0.1"
    assert v["pending_days"] == "0"
    assert v["expiry"] == "months"
    assert v["expiry_months"] == "24"
    assert v["tier_measure"] == "points_earned"
    assert v["evaluation_window"] == "rolling_12_months"
    assert v["tier_review"] == "anniversary"
    assert v["birthday_bonus"] == "200"
    assert (v["referrer_points"], v["referred_points"]) == ("500", "200")
    assert v["point_value"] == "0.01"
    assert v["min_redeem_points"] == "500"
    assert (v["staff_limit"], v["manager_limit"]) == ("500", "5000")
    assert v["goodwill_budget"] == "2000"
    assert [v[f"tiers-{i}-code"] for i in range(4)] == ["member", "silver", "gold", "platinum"]
    assert v["tiers-1-name_zh"] == "银卡会员"
    assert (v["tiers-2-threshold"], v["tiers-2-retention_threshold"]) == ("5000", "4000")
    assert (v["tiers-3-multiplier"], v["tiers-3-discount_percent"]) == ("1.5", "15")
    assert v["tiers-3-perks_en"] == "Executive lounge, late check-out until 16:00"
    # Empty rows to add tiers, and the words of the choices.
    assert v["tiers-4-code"] == "" and v["tiers-5-code"] == ""
    for words in ("Points earned", "Number of stays or visits", "The calendar year so far", "Every 1 January",
                  "Never", "Remove", "Edit everything as text (TOML)"):
        assert words in r.text
    # The saved programme's preview, as on the text page: a CN¥1,280 stay at each tier.
    preview = r.text[r.text.index('id="loyalty-preview"'):]
    assert re.search(r"A CN¥1,280\.00 stay earns [\d,]+ points at Member; Silver earns [\d,]+; Gold earns", preview)


def test_a_change_is_saved_and_the_other_keys_stay(client, owner, tenant_session):
    before = section(tenant_session, owner)
    v = form_values(client.get(URL).text)
    v.update({"points_per_currency_unit": "0.2", "pending_days": "3", "expiry": "never",
              "tier_measure": "spend", "evaluation_window": "calendar_year", "tier_review": "january",
              "birthday_bonus": "300", "referrer_points": "600", "referred_points": "250",
              "point_value": "0.02", "min_redeem_points": "1,000", "staff_limit": "100",
              "manager_limit": "8000", "goodwill_budget": "1500.50",
              "tiers-1-threshold": "2000", "tiers-1-retention_threshold": "1500",
              "tiers-1-name_en": "Silver card", "tiers-1-perks_en": "Late check-out until 14:00"})
    r = client.post(URL, data=v)
    assert r.status_code == 303
    assert r.headers["Location"].endswith("/settings/programme/loyalty")
    page = client.get(r.headers["Location"]).text
    assert "Loyalty programme has been saved." in page
    assert "Points never expire." in page

    p = loyalty.programme_of(tenant_session(owner))
    assert p.rate == Decimal("0.2")
    assert (p.pending_days, p.expiry, p.tier_measure) == (3, "never", "spend")
    assert (p.evaluation_window, p.tier_review) == ("calendar_year", "january")
    assert (p.birthday_bonus, p.referrer_points, p.referred_points) == (300, 600, 250)
    assert (p.point_value, p.min_redeem_points) == (Decimal("0.02"), 1000)
    assert p.adjust_limits == {"staff": 100, "manager": 8000}
    assert p.goodwill_budget == Decimal("1500.50")
    silver = p.tier("silver")
    assert (silver.threshold, silver.retention_threshold, silver.name_en) == (2000, 1500, "Silver card")
    assert silver.perks_en == "Late check-out until 14:00"
    assert [t.code for t in p.tiers] == ["member", "silver", "gold", "platinum"]
    assert [x.code for x in p.promotions] == ["spring-festival"]
    after = section(tenant_session, owner)
    for key in ("promotions", "flat_points", "category_multipliers"):
        assert after[key] == before[key]
    # The form shows what was saved.
    v = form_values(client.get(URL).text)
    assert (v["points_per_currency_unit"], v["expiry"], v["min_redeem_points"]) == ("0.2", "never", "1000")


def test_earn_rates_stay_when_the_form_is_saved(client, owner, tenant_session):
    text = services.programme_section_text(tenant_session(owner), "loyalty").replace(
        "pending_days = 0", 'pending_days = 0\nearn_rates = [{ kind = "stay", location = "", rate = "0.2" }]')
    assert client.post("/settings/programme/loyalty", data={"text": text}).status_code == 303
    v = form_values(client.get(URL).text)
    v["birthday_bonus"] = "100"
    assert client.post(URL, data=v).status_code == 303
    after = section(tenant_session, owner)
    assert after["earn_rates"] == [{"kind": "stay", "location": "", "rate": "0.2"}]
    assert after["birthday_bonus"] == 100
    assert loyalty.programme_of(tenant_session(owner)).rate_for("stay", "") == Decimal("0.2")


def test_removing_and_adding_tiers(client, owner, tenant_session):
    v = form_values(client.get(URL).text)
    v["tiers-3-remove"] = "y"  # platinum goes
    v.update({"tiers-4-code": "diamond", "tiers-4-name_zh": "钻石会员", "tiers-4-name_en": "Diamond",
              "tiers-4-threshold": "20000", "tiers-4-multiplier": "2", "tiers-4-discount_percent": "20",
              "tiers-4-perks_en": "Everything"})
    assert client.post(URL, data=v).status_code == 303
    p = loyalty.programme_of(tenant_session(owner))
    assert [t.code for t in p.tiers] == ["member", "silver", "gold", "diamond"]
    diamond = p.tier("diamond")
    # A blank retention threshold is the threshold itself.
    assert (diamond.threshold, diamond.retention_threshold) == (20000, 20000)
    assert (diamond.multiplier, diamond.discount_percent, diamond.name_zh) == (Decimal(2), Decimal(20), "钻石会员")
    saved = section(tenant_session, owner)["tiers"][3]
    assert "retention_threshold" not in saved and "perks_zh" not in saved
    v = form_values(client.get(URL).text)
    assert v["tiers-3-code"] == "diamond" and v["tiers-4-code"] == "" and v["tiers-5-code"] == ""


def test_full_width_digits_are_read(client, owner, tenant_session):
    v = form_values(client.get(URL).text)
    v["birthday_bonus"] = "３００"
    v["point_value"] = "０.０２"
    assert client.post(URL, data=v).status_code == 303
    p = loyalty.programme_of(tenant_session(owner))
    assert (p.birthday_bonus, p.point_value) == (300, Decimal("0.02"))


def _remove_all(v):
    for i in range(6):
        v[f"tiers-{i}-remove"] = "y"


# Each message is shown beside the field it is about (``at``: the id of that field; None:
# above the form); a tier's problem on the tier's own row, without "Tier 2" (the row says it).
@pytest.mark.parametrize("change, message, field, at", [
    # Silver given gold's threshold: gold, after it, is refused.
    ({"tiers-1-threshold": "5000", "tiers-1-retention_threshold": ""},
     "Another tier has the same threshold.", "tiers-1-threshold", "tiers-2-threshold"),
    # Gold given less than silver (900 for 9000): refused on gold's row, not moved below silver.
    ({"tiers-2-threshold": "900", "tiers-2-retention_threshold": "800"},
     "Must be higher than the threshold of the tier before it.", "tiers-2-threshold", None),
    ({"tiers-1-retention_threshold": "1200"}, "Cannot exceed the threshold.", "tiers-1-retention_threshold", None),
    ({"pending_days": "-1"}, "Must be a whole number of at least 0.", "pending_days", None),
    ({"pending_days": "400"}, "Must be at most 366.", "pending_days", None),
    ({"expiry_months": "0"}, "Must be a whole number of at least 1.", "expiry_months", None),
    ({"staff_limit": "99999999"}, "Must be at most 10,000,000.", "staff_limit", None),
    ({"point_value": "-0.5"}, "Must be a number of at least 0.", "point_value", None),
    ({"tiers-2-discount_percent": "-5"}, "Must be a number of at least 0.", "tiers-2-discount_percent", None),
    ({"tiers-2-discount_percent": "120"}, "Must be a percentage from 0 to 100.", "tiers-2-discount_percent", None),
    ({"point_value": "0"}, "Must be more than 0.", "point_value", None),
    ({"tiers-1-multiplier": "0"}, "Must be more than 0.", "tiers-1-multiplier", None),
    ({"birthday_bonus": "lots"}, "Enter a whole number, such as 500.", "birthday_bonus", None),
    ({"tiers-1-multiplier": "1.1x"}, "Enter a number, such as 1.25.", "tiers-1-multiplier", None),
    ({"tiers-1-threshold": "1000.5"}, "Enter a whole number, such as 500.", "tiers-1-threshold", None),
    ({"goodwill_budget": ""}, "This field is required.", "goodwill_budget", None),
    ({"tiers-1-threshold": ""}, "This field is required.", "tiers-1-threshold", None),
    ({"expiry": "sometimes"}, "Choose one of the listed values.", None, "expiry"),
    ({"tiers-1-code": "member"}, "Another tier has this code.", "tiers-1-code", None),
    ({"tiers-1-code": "Bad Code!"}, "Use 1 to 40 lower-case letters, digits and hyphens", "tiers-1-code", None),
    ({"tiers-1-name_en": ""}, "This field is required.", "tiers-1-name_en", None),
    ({"__remove_all": ""}, "At least one tier is needed.", None, None),
])
def test_invalid_input_is_refused_and_kept(client, owner, tenant_session, change, message, field, at):
    before = section(tenant_session, owner)
    v = form_values(client.get(URL).text)
    if "__remove_all" in change:
        _remove_all(v)
    else:
        v.update(change)
    r = client.post(URL, data=v)
    assert r.status_code == 422
    assert "Nothing was saved." in r.text
    at = at or field
    if at:
        errors = r.text[r.text.index(f'id="{at}-errors"'):]
        assert html.escape(message, quote=False) in errors[:errors.index("</ul>")]
        assert "Tier 2" not in r.text and "Tier 3" not in r.text
    else:
        problems = r.text[r.text.index('id="form-problems"'):]
        assert html.escape(message, quote=False) in problems[:problems.index("</div>")]
    kept = form_values(r.text)
    if field:
        assert kept[field] == change[field]
    if "__remove_all" in change:
        assert all(kept.get(f"tiers-{i}-remove") == "y" for i in range(6))
    assert section(tenant_session, owner) == before


def test_a_problem_with_a_tier_added_at_the_end_is_shown_on_its_row(client, owner):
    """A tier typed in an empty row at the end is saved by its threshold (second here):
    its problem is shown on the row it was typed in, not on the second row."""
    v = form_values(client.get(URL).text)
    v.update({"tiers-4-code": "bronze", "tiers-4-name_zh": "铜卡", "tiers-4-name_en": "Bronze",
              "tiers-4-threshold": "500", "tiers-4-retention_threshold": "800"})
    r = client.post(URL, data=v)
    assert r.status_code == 422
    errors = r.text[r.text.index('id="tiers-4-retention_threshold-errors"'):]
    assert "Cannot exceed the threshold." in errors[:errors.index("</ul>")]
    assert 'id="tiers-1-retention_threshold-errors"' not in r.text
    assert form_values(r.text)["tiers-4-code"] == "bronze"


def test_the_stricter_checks_are_said_with_the_others_not_after_they_are_fixed(client, owner, tenant_session):
    """A refused threshold and a zero point value, a multiplier of 0 on another tier: all
    three at once, so the second save is not refused for what the first did not say."""
    before = section(tenant_session, owner)
    v = form_values(client.get(URL).text)
    v.update({"tiers-1-retention_threshold": "1200", "tiers-2-multiplier": "0", "point_value": "0"})
    r = client.post(URL, data=v)
    assert r.status_code == 422
    for field, message in (("tiers-1-retention_threshold", "Cannot exceed the threshold."),
                           ("tiers-2-multiplier", "Must be more than 0."), ("point_value", "Must be more than 0.")):
        errors = r.text[r.text.index(f'id="{field}-errors"'):]
        assert message in errors[:errors.index("</ul>")], field
    assert section(tenant_session, owner) == before


def test_the_toml_editor_names_the_tier_of_a_problem(client, owner, tenant_session):
    """Edited as text there are no rows to show a problem on: the message names the tier."""
    before = section(tenant_session, owner)
    text = services.programme_section_text(tenant_session(owner), "loyalty")
    changed = re.sub(r'discount_percent = "?10"?', 'discount_percent = "150"', text, count=1)
    assert changed != text
    r = client.post("/settings/programme/loyalty", data={"text": changed})
    assert r.status_code == 422
    assert "Tier 3: the discount is a percentage from 0 to 100." in r.text
    assert section(tenant_session, owner) == before


@pytest.mark.parametrize("field, typed, message", [
    ("point_value", "0,05", "Enter a number, such as 1.25."),       # a decimal comma is not 5
    ("tiers-1-multiplier", "1,5", "Enter a number, such as 1.25."),
    ("goodwill_budget", "5000000", "Must be at most 1,000,000."),    # not "at least 0"
    ("points_per_currency_unit", "0.0000001", "Must be 0 or at least 0.000001."),
    ("expiry_months", "200000", "Must be at most 1,200."),          # awards could not date the expiry
])
def test_numbers_a_ledger_could_not_run_or_that_were_misread_are_refused(client, owner, tenant_session,
                                                                          field, typed, message):
    before = section(tenant_session, owner)
    v = form_values(client.get(URL).text)
    v[field] = typed
    r = client.post(URL, data=v)
    assert r.status_code == 422
    errors = r.text[r.text.index(f'id="{field}-errors"'):]
    assert message in errors[:errors.index("</ul>")]
    assert section(tenant_session, owner) == before


def test_grouped_thousands_are_read_and_a_threshold_of_a_trillion_saves_again(client, owner, tenant_session):
    v = form_values(client.get(URL).text)
    v.update({"goodwill_budget": "2,500.50", "tiers-3-threshold": "1,000,000,000,000",
              "tiers-3-retention_threshold": "1000000000000"})
    assert client.post(URL, data=v).status_code == 303
    saved = section(tenant_session, owner)
    assert saved["goodwill_budget"] == "2500.50" and saved["tiers"][3]["threshold"] == 1_000_000_000_000
    assert client.post(URL, data=form_values(client.get(URL).text)).status_code == 303  # shown, and saved as shown


def test_a_tiny_rate_saved_earlier_does_not_break_the_pages(client, owner, tenant_session, write_session):
    """The preview's sample amount is what earns 100 points: for a rate read before the
    minimum existed, too big to read; the pages open with the usual sample instead."""
    from saas.settings.models import ProgrammeSection
    s = write_session(owner)
    row = s.scalar(select(ProgrammeSection).where(ProgrammeSection.section == "loyalty"))
    row.data = {**row.data, "points_per_currency_unit": "0.0000001"}
    s.commit()
    for url in (URL, "/settings/programme/loyalty"):
        r = client.get(url)
        assert r.status_code == 200 and 'id="loyalty-preview"' in r.text, url


def test_at_most_twenty_tiers(client, owner, tenant_session):
    text = services.programme_section_text(tenant_session(owner), "loyalty")
    head = text.split("[[loyalty.tiers]]")[0]
    tiers = "".join(f'\n[[loyalty.tiers]]\ncode = "t{i}"\nname_zh = "级{i}"\nname_en = "T{i}"\nthreshold = {i * 100}\n'
                    for i in range(21))
    r = client.post("/settings/programme/loyalty", data={"text": head + tiers})
    assert r.status_code == 422 and "At most 20 tiers." in r.text
    assert client.get(URL).status_code == 200


def test_a_text_in_a_number_is_named_at_its_field(client, owner):
    v = form_values(client.get(URL).text)
    v["tiers-2-threshold"] = "five thousand"
    r = client.post(URL, data=v)
    assert r.status_code == 422
    assert 'id="tiers-2-threshold-errors"' in r.text
    assert 'value="five thousand"' in r.text


@pytest.mark.parametrize("role", ["staff", "manager"])
def test_staff_and_managers_may_not_use_the_form(client, make_tenant, add_member, tenant_session, role):
    tenant, _ = make_tenant(industry="hotel")
    before = section(tenant_session, tenant)
    user = add_member(tenant, role)
    assert login(client, user.email).status_code == 303
    assert client.get(URL).status_code == 403
    assert client.post(URL, data={"birthday_bonus": "9999"}).status_code == 403
    assert section(tenant_session, tenant) == before


def test_the_form_speaks_chinese(client, make_tenant):
    _, user = make_tenant(industry="hotel", language="zh_CN")
    assert login(client, user.email).status_code == 303
    page = client.get(URL).text
    for words in ("编辑会员积分方案", "每年 1 月 1 日", "保级门槛", "生日奖励积分", "移除"):
        assert words in page
    v = form_values(page)
    v["birthday_bonus"] = "很多"
    v["tiers-1-threshold"], v["tiers-1-retention_threshold"] = "5000", ""  # the same as gold's
    r = client.post(URL, data=v)
    assert r.status_code == 422
    assert "请输入整数，例如 500。" in r.text
    v["birthday_bonus"] = "200"
    r = client.post(URL, data=v)
    assert r.status_code == 422
    assert "另一个等级的门槛与此相同。" in r.text


def test_a_threshold_of_millions_is_saved(client, owner, tenant_session):
    """Spend thresholds in the currency run to millions (a bank's private-banking tier)."""
    v = form_values(client.get(URL).text)
    top = max(i for i in range(10) if v.get(f"tiers-{i}-code"))
    v[f"tiers-{top}-threshold"] = "99,999,999"
    r = client.post(URL, data=v)
    assert r.status_code == 303, r.text
    assert section(tenant_session, owner)["tiers"][top]["threshold"] == 99_999_999


def test_a_tier_added_in_an_empty_row_takes_its_place_by_threshold(client, owner, tenant_session):
    """The base tier removed, then put back in the empty row at the end: saved first."""
    v = form_values(client.get(URL).text)
    base = {k.split("-", 2)[2]: v[k] for k in v if k.startswith("tiers-0-") and not k.endswith("remove")}
    v["tiers-0-remove"] = "y"
    assert client.post(URL, data=v).status_code == 303
    assert [t["code"] for t in section(tenant_session, owner)["tiers"]] == ["silver", "gold", "platinum"]
    v = form_values(client.get(URL).text)
    v.update({f"tiers-3-{k}": value for k, value in base.items()})
    assert client.post(URL, data=v).status_code == 303
    tiers = section(tenant_session, owner)["tiers"]
    assert [(t["code"], t["threshold"]) for t in tiers] == [("member", 0), ("silver", 1000), ("gold", 5000),
                                                           ("platinum", 15000)]
