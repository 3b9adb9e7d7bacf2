"""Settings screens (owner only): defaults, editable lists, programme set-up, API keys."""
from __future__ import annotations

import hashlib
import html
import re
import tomllib
import uuid

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import select, text

from saas.auth.models import Tenant
from saas.errors import ValidationFailed
from saas.settings import presets, services
from saas.settings.models import Department, Location, TransactionKind
from tests.conftest import csrf_from, login

FULL_KEY_RE = re.compile(r"htk_[0-9a-f]{32}_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def owner(client, make_tenant):
    """A hotel tenant whose owner is logged in with ``client``."""
    tenant, user = make_tenant(industry="hotel")
    assert login(client, user.email).status_code == 303
    return tenant


def textarea(page: str) -> str:
    m = re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.S)
    assert m, "no textarea on the page"
    # Browsers drop one newline right after <textarea>; WTForms writes one for that reason.
    return html.unescape(m.group(1)).removeprefix("\r\n").removeprefix("\n")


def one(s, model, code):
    return s.scalar(select(model).where(model.code == code))


# --- tenant defaults ----------------------------------------------------------------------

def test_owner_sees_overview_and_edits_defaults(client, owner, tenant_session):
    r = client.get("/settings")
    assert r.status_code == 200
    for link in ("/settings/locations", "/settings/departments", "/settings/transaction-kinds",
                 "/settings/programme", "/settings/api-keys", "/settings/staff"):
        assert f'href="{link}"' in r.text
    assert f'value="{owner.name}"' in r.text

    r = client.post("/settings", data={"business_name": "  Harbour Hotel  ", "language": "zh_CN",
                                       "timezone": "Asia/Hong_Kong", "currency": "HKD",
                                       "country": "HK"})
    assert r.status_code == 303
    assert r.headers["Location"].endswith("/settings")
    page = client.get("/settings").text
    assert "The business settings have been saved." in page
    assert 'value="Harbour Hotel"' in page

    t = tenant_session(owner).get(Tenant, owner.id)
    assert (t.name, t.language, t.timezone, t.currency, t.country) == (
        "Harbour Hotel", "zh_CN", "Asia/Hong_Kong", "HKD", "HK")


@pytest.mark.parametrize("change, message", [
    ({"business_name": ""}, "This field is required."),
    ({"business_name": "   "}, "This field is required."),
    ({"business_name": "<b>Best</b> Hotel"}, "Use plain text"),
    ({"business_name": "x" * 121}, "At most 120 characters."),
    ({"timezone": "Mars/Olympus_Mons"}, "Choose one of the listed values."),
    ({"language": "fr"}, "Choose one of the listed values."),
    ({"currency": "XBT"}, "Choose one of the listed values."),
    ({"country": "XX"}, "Choose one of the listed values."),
])
def test_bad_defaults_are_refused(client, owner, tenant_session, change, message):
    data = {"business_name": "New name", "language": "en", "timezone": "Asia/Shanghai", "currency": "CNY",
            "country": "CN", **change}
    r = client.post("/settings", data=data)
    assert r.status_code == 422
    assert message in r.text
    if change.get("business_name", "").strip():
        # What the user typed is kept (escaped, never rendered as markup).
        assert html.escape(change["business_name"], quote=True) in r.text
        assert "<b>Best</b>" not in r.text
    t = tenant_session(owner).get(Tenant, owner.id)
    assert t.name == owner.name and t.language == "en" and t.timezone == owner.timezone and t.currency == "CNY"


def test_update_tenant_defaults_checks_its_input(app, owner, tenant_session):
    s = tenant_session(owner)
    t = s.get(Tenant, owner.id)
    with pytest.raises(ValidationFailed) as exc:
        services.update_tenant_defaults(s, t, "", "xx", "Nowhere/Land", "cny")
    assert set(exc.value.errors) == {"business_name", "language", "timezone", "currency"}
    assert t.name == owner.name


# --- editable lists -------------------------------------------------------------------------

def test_add_edit_deactivate_and_reactivate_a_department(client, owner, tenant_session):
    r = client.get("/settings/departments")
    assert r.status_code == 200
    assert "front-office" in r.text and "前厅部" in r.text and "Front office" in r.text

    r = client.post("/settings/departments", data={"code": "spa", "name_zh": "水疗部", "name_en": "Spa"})
    assert r.status_code == 303
    page = client.get("/settings/departments").text
    assert "Spa has been added." in page
    assert "水疗部" in page

    spa = one(tenant_session(owner), Department, "spa")
    assert spa.active and spa.name_en == "Spa"
    assert spa.position > one(tenant_session(owner), Department, "sales").position

    edit_url = f"/settings/departments/{spa.id}"
    r = client.get(edit_url)
    assert r.status_code == 200
    assert 'value="spa"' in r.text and "checked" in r.text

    # Unticked "active" deactivates; the entry stays (transactions refer to it).
    r = client.post(edit_url, data={"code": "spa", "name_zh": "水疗部", "name_en": "Spa & wellness"})
    assert r.status_code == 303
    row = one(tenant_session(owner), Department, "spa")
    assert row.name_en == "Spa & wellness" and not row.active
    page = client.get("/settings/departments").text
    assert "Spa &amp; wellness" in page and "Inactive" in page

    r = client.post(edit_url, data={"code": "spa", "name_zh": "水疗部", "name_en": "Spa & wellness", "active": "y"})
    assert r.status_code == 303
    assert one(tenant_session(owner), Department, "spa").active


def test_add_and_edit_a_location_with_its_address(client, owner, tenant_session):
    r = client.post("/settings/locations", data={"code": "airport", "name_zh": "机场店", "name_en": "Airport hotel",
                                                 "address": "1 Terminal Road"})
    assert r.status_code == 303
    page = client.get("/settings/locations").text
    assert "Airport hotel" in page and "1 Terminal Road" in page

    loc = one(tenant_session(owner), Location, "airport")
    r = client.post(f"/settings/locations/{loc.id}", data={"code": "airport-t2", "name_zh": "机场店",
                                                           "name_en": "Airport hotel", "address": "2 Terminal Road",
                                                           "active": "y"})
    assert r.status_code == 303
    s = tenant_session(owner)
    assert one(s, Location, "airport") is None
    moved = one(s, Location, "airport-t2")
    assert moved.id == loc.id and moved.address == "2 Terminal Road" and moved.active


@pytest.mark.parametrize("data, field_message", [
    ({"code": "front-office", "name_zh": "前台", "name_en": "Front desk"}, "This code is already used."),
    ({"code": "Front Office", "name_zh": "前台", "name_en": "Front desk"}, "lower-case letters"),
    ({"code": "desk", "name_zh": "", "name_en": "Front desk"}, "This field is required."),
    ({"code": "desk", "name_zh": "前台", "name_en": "<script>x</script>"}, "Use plain text"),
])
def test_bad_entries_are_refused(client, owner, tenant_session, data, field_message):
    before = len(services.list_entries(tenant_session(owner), "departments"))
    r = client.post("/settings/departments", data=data)
    assert r.status_code == 422
    assert field_message in r.text
    assert html.escape(data["code"], quote=True) in r.text  # typed values kept
    assert "<script>x</script>" not in r.text
    assert len(services.list_entries(tenant_session(owner), "departments")) == before


def test_editing_to_a_duplicate_code_is_refused(client, owner, tenant_session):
    sales = one(tenant_session(owner), Department, "sales")
    r = client.post(f"/settings/departments/{sales.id}",
                    data={"code": "housekeeping", "name_zh": "销售部", "name_en": "Sales", "active": "y"})
    assert r.status_code == 422
    assert "This code is already used." in r.text
    assert 'value="housekeeping"' in r.text
    assert one(tenant_session(owner), Department, "sales") is not None


def test_another_transaction_kind_becomes_the_default(client, owner, tenant_session):
    s = tenant_session(owner)
    stay, banquet = one(s, TransactionKind, "stay"), one(s, TransactionKind, "banquet")
    assert stay.is_default and not banquet.is_default
    page = client.get("/settings/transaction-kinds").text
    assert page.count('class="badge"') == 1

    r = client.post(f"/settings/transaction-kinds/{banquet.id}",
                    data={"code": "banquet", "name_zh": "宴会会议", "name_en": "Banquet / meeting",
                          "active": "y", "is_default": "y"})
    assert r.status_code == 303
    s = tenant_session(owner)
    assert one(s, TransactionKind, "banquet").is_default
    assert not one(s, TransactionKind, "stay").is_default

    # A new kind can be added as the default too.
    r = client.post("/settings/transaction-kinds", data={"code": "spa", "name_zh": "水疗", "name_en": "Spa",
                                                         "is_default": "y"})
    assert r.status_code == 303
    s = tenant_session(owner)
    assert [k.code for k in services.list_entries(s, "transaction-kinds") if k.is_default] == ["spa"]


@pytest.mark.parametrize("data", [
    {"active": "y"},                 # untick "default"
    {"is_default": "y"},             # untick "active"
])
def test_the_only_default_kind_cannot_be_undefaulted_or_deactivated(client, owner, tenant_session, data):
    stay = one(tenant_session(owner), TransactionKind, "stay")
    r = client.post(f"/settings/transaction-kinds/{stay.id}",
                    data={"code": "stay", "name_zh": "住宿", "name_en": "Overnight stay", **data})
    assert r.status_code == 422
    assert "Make another kind the default first." in r.text
    row = one(tenant_session(owner), TransactionKind, "stay")
    assert row.is_default and row.active and row.name_en == "Stay"


def test_unknown_kind_and_bad_ids_are_404(client, owner):
    assert client.get("/settings/widgets").status_code == 404
    assert client.get("/settings/departments/not-a-uuid").status_code == 404
    assert client.get(f"/settings/departments/{uuid.uuid4()}").status_code == 404
    assert client.get("/settings/programme/rewards").status_code == 404
    assert client.post("/settings/programme/rewards", data={"text": "[rewards]"}).status_code == 404
    assert client.post(f"/settings/api-keys/{uuid.uuid4()}/revoke").status_code == 404


def test_an_entry_of_one_kind_is_not_found_under_another(client, owner, tenant_session):
    sales = one(tenant_session(owner), Department, "sales")
    assert client.get(f"/settings/locations/{sales.id}").status_code == 404


# --- programme set-up ------------------------------------------------------------------------

def test_programme_page_shows_the_preset(client, owner):
    r = client.get("/settings/programme")
    assert r.status_code == 200
    for shown in ("Loyalty programme", "Platinum", "15,000", "× 1.5", "Points earned",
                  "Churn rules", "Stay satisfaction survey", "Friendliness of our staff", "1 to 5",
                  "Satisfaction targets", "Front office", "90%"):
        assert shown in r.text, shown
    assert "白金会员" not in r.text  # English user: English names


def test_loyalty_section_round_trips_with_a_new_tier(client, owner, tenant_session):
    r = client.get("/settings/programme/loyalty")
    assert r.status_code == 200
    toml_text = textarea(r.text)
    assert tomllib.loads(toml_text)["loyalty"] == services.programme_sections(tenant_session(owner))["loyalty"]

    toml_text += '\n[[loyalty.tiers]]\ncode = "diamond"\nname_zh = "钻石会员"\nname_en = "Diamond"\nthreshold = 50000\nmultiplier = "2"\n'
    r = client.post("/settings/programme/loyalty", data={"text": toml_text})
    assert r.status_code == 303
    page = client.get("/settings/programme").text
    assert "Loyalty programme has been saved." in page
    assert "Diamond" in page and "50,000" in page

    tiers = services.programme_sections(tenant_session(owner))["loyalty"]["tiers"]
    assert [t["code"] for t in tiers] == ["member", "silver", "gold", "platinum", "diamond"]
    # The edit page now shows the new tier in the text as well.
    assert 'code = "diamond"' in textarea(client.get("/settings/programme/loyalty").text)


@pytest.mark.parametrize("section", presets.PROGRAMME_SECTIONS)
def test_every_section_saves_unchanged_when_resubmitted(client, owner, tenant_session, section):
    before = services.programme_sections(tenant_session(owner))[section]
    r = client.post(f"/settings/programme/{section}", data={"text": textarea(client.get(f"/settings/programme/{section}").text)})
    assert r.status_code == 303
    assert services.programme_sections(tenant_session(owner))[section] == before


def test_survey_question_edit_shows_on_the_programme_page(client, owner):
    t = textarea(client.get("/settings/programme/surveys").text)
    t = t.replace("Friendliness of our staff", "How friendly was the front desk?")
    assert client.post("/settings/programme/surveys", data={"text": t}).status_code == 303
    page = client.get("/settings/programme").text
    assert "How friendly was the front desk?" in page
    assert "Friendliness of our staff" not in page


@pytest.mark.parametrize("mangle, message", [
    (lambda t: t.replace("[loyalty]", "[loyalty"), "This is not valid TOML at line"),
    (lambda t: t.replace("pending_days = 0", "pending_day = 14"), "Unknown setting pending_day: check its spelling."),
    (lambda t: t.replace('code = "member"', 'code = "member"\nmultipler = "2"'),
     "Unknown setting tiers.multipler: check its spelling."),
    (lambda t: t.replace('kinds = ["stay"]', 'kinds = ["nope"]'), "No transaction kind has the code nope."),
    (lambda t: t.replace('point_value = "0.01"', 'point_value = "0"'), "Value of a point must be more than 0."),
    (lambda t: t.replace("threshold = 1000\n", "threshold = 20000\n"), "Tier thresholds must rise"),
    (lambda t: t.replace("[loyalty]", "[churn]").replace("loyalty.tiers", "churn.tiers"), "exactly the section [loyalty]"),
    (lambda t: t.replace("pending_days = 0", "pending_days = 0\nstarts = 2024-01-01"), "write dates as text"),
    (lambda t: t.replace('points_per_currency_unit = "0.1"', "points_per_currency_unit = nan"), "finite numbers"),
    (lambda t: t + "\nx = " + "[" * 3000 + "]" * 3000, "nested too deeply"),
    (lambda t: "", "This field is required."),
])
def test_bad_programme_text_is_refused_and_kept(client, owner, tenant_session, mangle, message):
    before = services.programme_sections(tenant_session(owner))["loyalty"]
    original = textarea(client.get("/settings/programme/loyalty").text)
    typed = mangle(original)
    r = client.post("/settings/programme/loyalty", data={"text": typed})
    assert r.status_code == 422
    assert message in r.text
    if typed:
        assert textarea(r.text) == typed
    assert services.programme_sections(tenant_session(owner))["loyalty"] == before


def test_a_target_for_an_unknown_department_is_refused(client, owner):
    t = textarea(client.get("/settings/programme/targets").text).replace('"front-office"', '"casino"')
    r = client.post("/settings/programme/targets", data={"text": t})
    assert r.status_code == 422
    assert "names an unknown department" in r.text


@pytest.mark.parametrize("section, old, typo", [
    ("churn", "at_risk_gap_months", "at_risk_gap_month"),
    ("surveys", "window_days", "window_day"),
    ("targets", "target_value", "target_values"),
])
def test_a_misspelt_key_of_any_section_is_refused_not_saved_silently(client, owner, section, old, typo):
    t = textarea(client.get(f"/settings/programme/{section}").text)
    assert client.post(f"/settings/programme/{section}", data={"text": t}).status_code == 303  # as it stands
    lines = t.split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{old} ="))
    lines.insert(at + 1, lines[at].replace(old, typo, 1))
    r = client.post(f"/settings/programme/{section}", data={"text": "\n".join(lines)})
    assert r.status_code == 422 and "check its spelling" in r.text and typo in r.text


@pytest.mark.parametrize("industry", ["hotel", "dealership", "property", "bank", "other"])
def test_serializer_round_trips_every_preset(industry):
    preset = presets.load_preset(industry)
    for section in presets.PROGRAMME_SECTIONS:
        assert tomllib.loads(services.section_to_toml(section, preset[section])) == {section: preset[section]}


_scalars = st.one_of(st.text(), st.integers(), st.booleans(),
                     st.floats(allow_nan=False, allow_infinity=False))
_keys = st.text(min_size=1, max_size=12)


@given(st.lists(st.dictionaries(_keys, st.one_of(_scalars, st.lists(_scalars, max_size=3),
                                                 st.lists(st.dictionaries(_keys, _scalars, max_size=3), max_size=3)),
                                max_size=5), max_size=3))
@example([{"0\n": ""}])  # a key ending in a newline is quoted, not written bare
def test_serializer_round_trips_any_text_and_numbers(data):
    doc = {"surveys": data}
    assert tomllib.loads(services.section_to_toml("surveys", data)) == doc
    table = {"k": 1, **(data[0] if data else {}), "rows": data}
    assert tomllib.loads(services.section_to_toml("loyalty", table)) == {"loyalty": table}


# --- API keys -------------------------------------------------------------------------------

def test_api_key_is_shown_once_stored_hashed_and_revocable(client, owner, tenant_session):
    r = client.post("/settings/api-keys", data={"name": "Front desk PMS"})
    assert r.status_code == 200
    assert "it will not be shown again" in r.text
    assert r.headers["Cache-Control"] == "no-store"
    assert 'API key “Front desk PMS” created.' in r.text
    full = FULL_KEY_RE.search(r.text).group(0)
    assert full.startswith(f"htk_{owner.id.hex}_")
    secret = full.split("_", 2)[2]

    # Not in the session (flash) either.
    with client.session_transaction() as sess:
        assert full not in repr(dict(sess)) and secret not in repr(dict(sess))

    page = client.get("/settings/api-keys").text
    assert full not in page and secret not in page
    assert FULL_KEY_RE.search(page) is None
    assert f"htk_…{secret[:6]}" in page and "Front desk PMS" in page and "Active" in page

    s = tenant_session(owner)
    rows = s.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert len(rows) == 1
    for value in rows[0].values():
        assert full not in str(value) and secret not in str(value)
    assert rows[0]["key_hash"] == hashlib.sha256(full.encode()).hexdigest()
    key = services.verify_api_key(s, full)
    assert key is not None and key.name == "Front desk PMS"

    r = client.post(f"/settings/api-keys/{key.id}/revoke")
    assert r.status_code == 303
    page = client.get("/settings/api-keys").text
    assert "revoked" in page and "Revoked" in page
    assert 'action="/settings/api-keys/%s/revoke"' % key.id not in page
    assert services.verify_api_key(tenant_session(owner), full) is None


@pytest.mark.parametrize("name, message", [("", "This field is required."), ("x" * 81, "At most 80 characters."),
                                           ("<i>PMS</i>", "Use plain text")])
def test_bad_api_key_name_is_refused(client, owner, tenant_session, name, message):
    r = client.post("/settings/api-keys", data={"name": name})
    assert r.status_code == 422
    assert message in r.text
    assert FULL_KEY_RE.search(r.text) is None
    assert services.list_api_keys(tenant_session(owner)) == []


def test_revoke_needs_the_csrf_token(app, client, owner, tenant_session, monkeypatch):
    client.post("/settings/api-keys", data={"name": "POS"})
    key = services.list_api_keys(tenant_session(owner))[0]
    monkeypatch.setitem(app.config, "WTF_CSRF_ENABLED", True)
    r = client.post(f"/settings/api-keys/{key.id}/revoke")
    assert r.status_code == 400
    assert services.list_api_keys(tenant_session(owner))[0].revoked_at is None
    token = csrf_from(client.get("/settings/api-keys").text)
    r = client.post(f"/settings/api-keys/{key.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 303
    assert services.list_api_keys(tenant_session(owner))[0].revoked_at is not None


# --- tenancy and roles ---------------------------------------------------------------------

def test_another_tenants_entries_and_keys_are_404(client, owner, make_tenant, tenant_session):
    other, _user = make_tenant(industry="bank")
    s = tenant_session(other)
    foreign = {
        "departments": s.scalars(select(Department)).first(),
        "locations": s.scalars(select(Location)).first(),
        "transaction-kinds": s.scalars(select(TransactionKind)).first(),
    }
    key, _full = services.create_api_key(s, "Their DMS", None)
    s.commit()

    for kind, entry in foreign.items():
        url = f"/settings/{kind}/{entry.id}"
        assert client.get(url).status_code == 404
        r = client.post(url, data={"code": "taken", "name_zh": "改", "name_en": "Changed", "active": "y"})
        assert r.status_code == 404
    assert client.post(f"/settings/api-keys/{key.id}/revoke").status_code == 404

    s = tenant_session(other)
    for kind, entry in foreign.items():
        fresh = services.get_entry(s, kind, entry.id)
        assert fresh.code == entry.code and fresh.name_en == entry.name_en
    assert services.get_api_key(s, key.id).revoked_at is None
    # And the owner's own lists do not show the other tenant's rows.
    assert "Their DMS" not in client.get("/settings/api-keys").text


def _settings_urls(app, s):
    """Every settings route with real ids of the tenant bound to ``s``."""
    values = {"kind": "departments", "section": "loyalty",
              "entry_id": s.scalars(select(Department)).first().id,
              "key_id": services.list_api_keys(s)[0].id}
    urls = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("settings."):
            continue
        with app.test_request_context():
            from flask import url_for

            url = url_for(rule.endpoint, **{a: values[a] for a in rule.arguments})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            urls.append((method, url))
    return urls


def test_every_settings_route_is_for_owners_only(app):
    from saas.web import access_level

    endpoints = [r.endpoint for r in app.url_map.iter_rules() if r.endpoint.startswith("settings.")]
    assert len(endpoints) >= 7
    assert all(access_level(app, e) == "owner" for e in endpoints)


@pytest.mark.parametrize("role", ["staff", "manager"])
def test_staff_and_managers_get_403_everywhere(app, client, make_tenant, add_member, tenant_session, role):
    tenant, _owner = make_tenant()
    s = tenant_session(tenant)
    services.create_api_key(s, "PMS", None)
    s.commit()
    urls = _settings_urls(app, s)
    assert ("POST", f"/settings/api-keys/{services.list_api_keys(s)[0].id}/revoke") in urls
    user = add_member(tenant, role)
    login(client, user.email)
    for method, url in urls:
        r = client.open(url, method=method, data={"name": "x", "code": "x", "name_zh": "x", "name_en": "x",
                                                    "text": "[loyalty]", "business_name": "x"})
        assert r.status_code == 403, (method, url)
    s = tenant_session(tenant)
    assert services.list_api_keys(s)[0].revoked_at is None
    assert s.get(Tenant, tenant.id).name == tenant.name


def test_owner_can_open_every_settings_page(app, client, owner, tenant_session):
    s = tenant_session(owner)
    services.create_api_key(s, "PMS", None)
    s.commit()
    for method, url in _settings_urls(app, s):
        if method == "GET":
            assert client.get(url).status_code == 200, url


def test_logged_out_visitors_are_sent_to_login(client):
    r = client.get("/settings/programme")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_chinese_ui_smoke(app, client, make_tenant, tenant_session):
    tenant, user = make_tenant(industry="hotel", language="zh_CN")
    login(client, user.email)
    s = tenant_session(tenant)
    services.create_api_key(s, "PMS", None)
    s.commit()
    for method, url in _settings_urls(app, s):
        if method == "GET":
            r = client.get(url)
            assert r.status_code == 200, url
            if not url.endswith("/preview"):  # the loyalty preview is a fragment the page swaps in
                assert 'lang="zh-CN"' in r.text
    page = client.get("/settings/programme").text
    assert "白金会员" in page and "员工服务态度" in page and "前厅部" in page
    assert "Platinum" not in page
    r = client.post("/settings/departments", data={"code": "spa", "name_zh": "水疗部", "name_en": "Spa"})
    assert r.status_code == 303
    assert "水疗部" in client.get("/settings/departments", follow_redirects=True).text


def test_a_toml_mistake_is_located_in_the_users_language(client, make_tenant):
    tenant, owner = make_tenant(industry="hotel", language="zh_CN")
    login(client, owner.email)
    original = textarea(client.get("/settings/programme/loyalty").text)
    r = client.post("/settings/programme/loyalty", data={"text": original.replace("[loyalty]", "[loyalty")})
    assert r.status_code == 422
    assert "TOML 格式有误：第 1 行第 9 列" in r.text
