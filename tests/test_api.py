"""JSON API v1: key authentication, tenant isolation, lists, errors and the OpenAPI document."""
from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from sqlalchemy import select

from saas.settings import services
from saas.settings.models import Department, Location
from tests.conftest import assert_error


@pytest.fixture
def api_key(tenant_session):
    """api_key(tenant) -> a full, committed API key of that tenant."""

    def factory(tenant, name: str = "PMS") -> str:
        s = tenant_session(tenant)
        _key, full = services.create_api_key(s, name, None)
        s.commit()
        return full

    return factory


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def entries(app, tenant, model) -> dict[str, tuple]:
    """The tenant's rows as the database has them: code -> (name_zh, name_en, active)."""
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    try:
        return {e.code: (e.name_zh, e.name_en, e.active) for e in s.scalars(select(model))}
    finally:
        s.close()


# --- authentication ----------------------------------------------------------------------

def test_no_or_malformed_header_is_401_with_challenge(client, make_tenant, api_key):
    tenant, _ = make_tenant()
    key = api_key(tenant)
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer"},
                    {"Authorization": f"Basic {key}"}, {"Authorization": f"Bearer {key} extra"}):
        r = client.get("/api/v1/tenant", headers=headers)
        assert_error(r, 401, "unauthorized")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_revoked_and_swapped_keys_are_401(app, client, make_tenant, api_key, tenant_session):
    a, _ = make_tenant()
    b, _ = make_tenant()
    key_a = api_key(a)
    api_key(b)
    assert client.get("/api/v1/tenant", headers=bearer(key_a)).status_code == 200

    secret = key_a.split("_", 2)[2]
    for bad in ("nonsense", "htk_nothex_" + secret, f"htk_{a.id.hex}_wrong-secret",
                f"htk_{b.id.hex}_{secret}",  # A's secret presented as B's key
                key_a + "x"):
        r = client.get("/api/v1/locations", headers=bearer(bad))
        assert_error(r, 401, "invalid_key")
        assert "invalid_token" in r.headers["WWW-Authenticate"]
        assert "locations" not in r.get_json()

    s = tenant_session(a)
    (row,) = services.list_api_keys(s)
    services.revoke_api_key(s, row.id)
    s.commit()
    assert_error(client.get("/api/v1/tenant", headers=bearer(key_a)), 401, "invalid_key")


def test_cli_key_works(app, client, make_tenant):
    tenant, _ = make_tenant()
    result = app.test_cli_runner().invoke(args=["api-keys", "create", "--tenant", tenant.slug, "--name", "DMS"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert client.get("/api/v1/tenant", headers=bearer(key)).get_json()["slug"] == tenant.slug


def test_tenant_endpoint_answers_for_the_keys_tenant(client, make_tenant, api_key):
    a, _ = make_tenant(industry="hotel", name="Harbour Hotel")
    b, _ = make_tenant(industry="bank", name="River Bank", language="zh_CN")
    for tenant in (a, b):
        r = client.get("/api/v1/tenant", headers=bearer(api_key(tenant)))
        assert r.status_code == 200
        assert r.get_json() == {"name": tenant.name, "slug": tenant.slug, "industry": tenant.industry,
                                "language": tenant.language, "currency": tenant.currency,
                                "timezone": tenant.timezone}
        assert r.headers["Cache-Control"] == "no-store"


def test_browser_login_does_not_choose_the_api_tenant(client, make_tenant, api_key):
    from tests.conftest import login

    a, owner_a = make_tenant(name="Logged In Hotel")
    b, _ = make_tenant(name="Key Owner Hotel")
    assert login(client, owner_a.email).status_code == 303
    # The session cookie alone is no API credential ...
    assert_error(client.get("/api/v1/tenant"), 401)
    # ... and a key answers for its own tenant, whoever is logged in.
    assert client.get("/api/v1/tenant", headers=bearer(api_key(b))).get_json()["name"] == "Key Owner Hotel"


# --- lists -------------------------------------------------------------------------------

KINDS = [("locations", "location", Location), ("departments", "department", Department)]


@pytest.mark.parametrize("kind,singular,model", KINDS)
def test_get_list_and_one(client, make_tenant, api_key, kind, singular, model):
    tenant, _ = make_tenant(industry="hotel")
    key = api_key(tenant)
    r = client.get(f"/api/v1/{kind}", headers=bearer(key))
    assert r.status_code == 200
    items = r.get_json()[kind]
    assert items, "the hotel preset has entries"
    first = items[0]
    expected_keys = {"code", "name_zh", "name_en", "active", "position"} | ({"address"} if kind == "locations" else set())
    assert set(first) == expected_keys
    r = client.get(f"/api/v1/{kind}/{first['code']}", headers=bearer(key))
    assert r.status_code == 200 and r.get_json() == first
    assert_error(client.get(f"/api/v1/{kind}/no-such-code", headers=bearer(key)), 404, "not_found")


@pytest.mark.parametrize("kind,singular,model", KINDS)
def test_put_list_replaces_and_deactivates(app, client, make_tenant, api_key, kind, singular, model):
    tenant, _ = make_tenant(industry="hotel")
    key = api_key(tenant)
    before = entries(app, tenant, model)
    kept = sorted(before)[0]
    extra = {"address": "1 Harbour Road"} if kind == "locations" else {}
    body = {kind: [
        {"code": kept, "name_zh": "改名", "name_en": "Renamed"},
        {"code": "new-one", "name_zh": "新", "name_en": "New one", **extra},
    ]}
    r = client.put(f"/api/v1/{kind}", json=body, headers=bearer(key))
    assert r.status_code == 200, r.text
    answered = {e["code"]: e for e in r.get_json()[kind]}
    assert answered["new-one"]["name_en"] == "New one" and answered["new-one"]["active"] is True
    if kind == "locations":
        assert answered["new-one"]["address"] == "1 Harbour Road"

    after = entries(app, tenant, model)
    assert after[kept] == ("改名", "Renamed", True)
    assert after["new-one"] == ("新", "New one", True)
    for code in set(before) - {kept}:
        assert after[code][2] is False, f"{code} should be deactivated, not deleted"
    assert {c for c, e in answered.items() if e["active"]} == {kept, "new-one"}

    # A second identical PUT changes nothing; an entry can come back.
    assert client.put(f"/api/v1/{kind}", json=body, headers=bearer(key)).status_code == 200
    assert entries(app, tenant, model) == after
    back = sorted(set(before) - {kept})
    if back:
        body[kind].append({"code": back[0], "name_zh": "回来", "name_en": "Back", "active": True})
        client.put(f"/api/v1/{kind}", json=body, headers=bearer(key))
        assert entries(app, tenant, model)[back[0]] == ("回来", "Back", True)


BAD_BODIES = [
    # (body or raw text, content type, status, error code, field in details)
    ({"locations": [{"code": "x1", "name_en": "No Chinese name"}]}, None, 422, "validation_failed",
     "locations.0.name_zh"),
    ({"locations": [{"code": "Bad Code", "name_zh": "坏", "name_en": "Bad"}]}, None, 422, "validation_failed",
     "locations.0.code"),
    ({"locations": [{"code": "dup", "name_zh": "一", "name_en": "One"},
                    {"code": "dup", "name_zh": "二", "name_en": "Two"}]}, None, 422, "validation_failed",
     "locations.1.code"),
    ({"locations": [{"code": "ok", "name_zh": "好", "name_en": 5, "active": "yes"}]}, None, 422,
     "validation_failed", "locations.0.name_en"),
    ({"locations": [{"code": "ok", "name_zh": "好", "name_en": "Ok", "colour": "red"}]}, None, 422,
     "validation_failed", "locations.0.colour"),
    ({"locations": {"code": "ok"}}, None, 422, "validation_failed", "locations"),
    ({}, None, 422, "validation_failed", "locations"),
    ([], None, 422, "validation_failed", ""),
    # Valid by schema, refused by the service: the valid first item must not be written either.
    ({"locations": [{"code": "fine", "name_zh": "好", "name_en": "Fine"},
                    {"code": "blank", "name_zh": "   ", "name_en": "Blank"}]}, None, 422, "validation_failed",
     "locations.1.name_zh"),
    # NUL and lone surrogates parse, but no database stores them.
    ({"locations": [{"code": "ok", "name_zh": "好\u0000", "name_en": "Ok"}]}, None, 422, "validation_failed",
     "locations.0.name_zh"),
    ('{"locations": [{"code": "ok", "name_zh": "\\ud800", "name_en": "Ok"}]}', "application/json", 422,
     "validation_failed", "locations.0.name_zh"),
    ("[" * 900 + "]" * 900, "application/json", 422, "validation_failed", ""),
    ('{"locations": [', "application/json", 400, "bad_json", None),
    ("[" * 100_000, "application/json", 400, "bad_json", None),
    ("NaN", "application/json", 400, "bad_json", None),
    (b"\xff\xfe\xfa", "application/json", 400, "bad_json", None),
    ("", "application/json", 400, "bad_json", None),
    ('{"locations": []}', "text/plain", 415, "unsupported_media_type", None),
    ("locations=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type", None),
]


@pytest.mark.parametrize("body,ctype,status,code,field", BAD_BODIES)
def test_bad_list_bodies_change_nothing(app, client, make_tenant, api_key, body, ctype, status, code, field):
    tenant, _ = make_tenant(industry="hotel")
    key = api_key(tenant)
    before = entries(app, tenant, Location)
    if ctype is None:
        r = client.put("/api/v1/locations", json=body, headers=bearer(key))
    else:
        r = client.put("/api/v1/locations", data=body, content_type=ctype, headers=bearer(key))
    err = assert_error(r, status, code)
    if field is not None:
        assert field in err["details"], err
        assert all(isinstance(m, str) and m for msgs in err["details"].values() for m in msgs)
    assert entries(app, tenant, Location) == before


def test_validation_messages_say_what_to_fix(client, make_tenant, api_key):
    tenant, _ = make_tenant()
    r = client.put("/api/v1/locations", headers=bearer(api_key(tenant)), json={"locations": [
        {"code": "Bad Code", "name_en": "x" * 121, "name_zh": 3, "active": "yes", "address": "a" * 256}]})
    details = assert_error(r, 422)["details"]
    assert details["locations.0.code"] == [
        "Use 1 to 40 lower-case letters, digits and hyphens, starting with a letter or digit."]
    assert details["locations.0.name_en"] == ["At most 120 characters."]
    assert details["locations.0.name_zh"] == ["Must be text."]
    assert details["locations.0.active"] == ["Must be true or false."]
    assert details["locations.0.address"] == ["At most 255 characters."]


@pytest.mark.parametrize("kind,singular,model", KINDS)
def test_put_one_creates_then_updates(app, client, make_tenant, api_key, kind, singular, model):
    tenant, _ = make_tenant()
    key = api_key(tenant)
    r = client.put(f"/api/v1/{kind}/vip-desk", json={"name_zh": "贵宾", "name_en": "VIP desk"}, headers=bearer(key))
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/api/v1/{kind}/vip-desk")
    assert r.get_json()["code"] == "vip-desk" and r.get_json()["active"] is True
    r = client.put(f"/api/v1/{kind}/vip-desk", headers=bearer(key),
                   json={"code": "vip-desk", "name_zh": "贵宾", "name_en": "VIP lounge", "active": False})
    assert r.status_code == 200, r.text
    assert entries(app, tenant, model)["vip-desk"] == ("贵宾", "VIP lounge", False)
    assert client.get(f"/api/v1/{kind}/vip-desk", headers=bearer(key)).get_json()["name_en"] == "VIP lounge"


@pytest.mark.parametrize("path,body,field", [
    ("/api/v1/locations/Not%20A%20Code", {"name_zh": "坏", "name_en": "Bad"}, "code"),
    ("/api/v1/locations/one", {"code": "two", "name_zh": "二", "name_en": "Two"}, "code"),
    ("/api/v1/locations/one", {"name_en": "One"}, "name_zh"),
    ("/api/v1/locations/one", {"name_zh": "一", "name_en": "One", "position": 3}, "position"),
])
def test_put_one_refuses_bad_input(app, client, make_tenant, api_key, path, body, field):
    tenant, _ = make_tenant()
    before = entries(app, tenant, Location)
    err = assert_error(client.put(path, json=body, headers=bearer(api_key(tenant))), 422, "validation_failed")
    assert field in err["details"]
    assert entries(app, tenant, Location) == before


def test_nul_in_the_address_is_not_found(client, make_tenant, api_key):
    tenant, _ = make_tenant()
    key = api_key(tenant)
    assert_error(client.get("/api/v1/locations/a%00b", headers=bearer(key)), 404)
    assert_error(client.put("/api/v1/departments/a%00b", json={"name_zh": "甲", "name_en": "A"},
                            headers=bearer(key)), 404)


def test_tenants_do_not_see_each_others_entries(app, client, make_tenant, api_key):
    a, _ = make_tenant()
    b, _ = make_tenant()
    key_a, key_b = api_key(a), api_key(b)
    r = client.put("/api/v1/locations/only-a", json={"name_zh": "甲", "name_en": "Only A"}, headers=bearer(key_a))
    assert r.status_code == 201

    assert_error(client.get("/api/v1/locations/only-a", headers=bearer(key_b)), 404, "not_found")
    assert "only-a" not in {e["code"] for e in client.get("/api/v1/locations", headers=bearer(key_b)).get_json()["locations"]}

    r = client.put("/api/v1/locations/only-a", json={"name_zh": "乙", "name_en": "B's own"}, headers=bearer(key_b))
    assert r.status_code == 201, "B creates its own entry, it does not update A's"
    assert entries(app, a, Location)["only-a"] == ("甲", "Only A", True)
    assert entries(app, b, Location)["only-a"] == ("乙", "B's own", True)
    assert client.get("/api/v1/locations/only-a", headers=bearer(key_a)).get_json()["name_en"] == "Only A"

    # B replacing its whole list leaves A's list alone.
    before_a = entries(app, a, Location)
    r = client.put("/api/v1/locations", json={"locations": []}, headers=bearer(key_b))
    assert r.status_code == 200
    assert not any(e["active"] for e in r.get_json()["locations"])
    assert entries(app, a, Location) == before_a


def test_api_speaks_the_asked_else_the_tenants_language(app, make_tenant, api_key):
    # No catalog is compiled in tests, so the locale itself is checked, not the wording.
    from flask_babel import get_locale

    from saas.api.spec import ApiError

    zh, _ = make_tenant(language="zh_CN")
    en, _ = make_tenant(language="en")
    for tenant, language in ((zh, "zh"), (en, "en")):
        with app.test_request_context("/api/v1/tenant", headers=bearer(api_key(tenant))):
            app.preprocess_request()
            assert get_locale().language == language
    # A client that asks for a language gets it.
    with app.test_request_context("/api/v1/tenant", headers={**bearer(api_key(zh)), "Accept-Language": "en"}):
        app.preprocess_request()
        assert get_locale().language == "en"
    # Without a (valid) key there is no tenant: the 401 follows Accept-Language.
    for header, language in (("en", "en"), ("zh-CN", "zh")):
        with app.test_request_context("/api/v1/tenant", headers={"Accept-Language": header}):
            with pytest.raises(ApiError):
                app.preprocess_request()
            assert get_locale().language == language


# --- errors ------------------------------------------------------------------------------

def test_unknown_routes_and_methods_answer_json(client, make_tenant, api_key):
    tenant, _ = make_tenant()
    key = api_key(tenant)
    for headers in ({}, bearer(key)):
        assert_error(client.get("/api/v1/nope", headers=headers), 404, "not_found")
        assert_error(client.get("/api/v1/locations/a/b", headers=headers), 404, "not_found")
        assert_error(client.delete("/api/v1/locations", headers=headers), 405, "method_not_allowed")
        assert_error(client.post("/api/v1/tenant", json={}, headers=headers), 405, "method_not_allowed")


def test_rate_limit_answers_429_json(app, client, make_tenant, api_key, monkeypatch):
    tenant, _ = make_tenant()
    key, other = api_key(tenant), api_key(tenant, name="POS")
    monkeypatch.setitem(app.config, "API_RATE_LIMIT", "3 per minute")
    for _ in range(3):
        assert client.get("/api/v1/tenant", headers=bearer(key)).status_code == 200
    r = client.get("/api/v1/locations", headers=bearer(key))
    assert_error(r, 429, "rate_limited")
    assert int(r.headers["Retry-After"]) >= 1
    # The budget is per key.
    assert client.get("/api/v1/tenant", headers=bearer(other)).status_code == 200


def test_unexpected_error_is_json_500(app, client, make_tenant, api_key, monkeypatch):
    tenant, _ = make_tenant()
    key = api_key(tenant)

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(services, "list_entries", boom)
    err = assert_error(client.get("/api/v1/locations", headers=bearer(key)), 500, "internal_error")
    assert re.fullmatch(r"[0-9a-f]{12}", err["reference"])
    assert "simulated" not in err["message"]


# --- the OpenAPI document ----------------------------------------------------------------

def _openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)


def test_openapi_document_is_valid_and_complete(app, client):
    r = client.get("/api/v1/openapi.json")  # public: no key
    assert r.status_code == 200
    doc = r.get_json()
    assert doc["openapi"].startswith("3.1")
    validate_openapi(doc)

    scheme = doc["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert doc["security"] == [{"bearer": []}]
    assert "Error" in doc["components"]["schemas"]

    routed = {(_openapi_path(rule.rule), m.lower())
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1")
              for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert routed == documented

    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (path, method)
            assert op["operationId"] and op["summary"]
            public = op.get("security") == []
            assert public == (path == "/api/v1/openapi.json")
            if not public:
                assert "401" in op["responses"], (path, method)
            if method == "put":
                assert {"400", "415", "422"} <= set(op["responses"])


def test_every_api_view_declares_api_or_public_access(app):
    from saas.web import API, PUBLIC, access_level

    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            assert access_level(app, rule.endpoint) in (API, PUBLIC), rule.endpoint


def test_responses_match_the_documented_schemas(app, client, make_tenant, api_key):
    """The document describes what the endpoints really answer."""
    tenant, _ = make_tenant()
    key = api_key(tenant)
    doc = client.get("/api/v1/openapi.json").get_json()

    def check(path, method, status, body):
        schema = doc["paths"][path][method]["responses"][str(status)]
        if "$ref" in schema:
            schema = doc["components"]["responses"][schema["$ref"].rsplit("/", 1)[1]]
        schema = schema["content"]["application/json"]["schema"]
        Draft202012Validator({**schema, "components": doc["components"]}).validate(body)

    check("/api/v1/tenant", "get", 200, client.get("/api/v1/tenant", headers=bearer(key)).get_json())
    check("/api/v1/tenant", "get", 401, client.get("/api/v1/tenant").get_json())
    for kind in ("locations", "departments"):
        listing = client.get(f"/api/v1/{kind}", headers=bearer(key)).get_json()
        check(f"/api/v1/{kind}", "get", 200, listing)
        code = listing[kind][0]["code"]
        check(f"/api/v1/{kind}/{{code}}", "get", 200,
              client.get(f"/api/v1/{kind}/{code}", headers=bearer(key)).get_json())
        check(f"/api/v1/{kind}/{{code}}", "get", 404,
              client.get(f"/api/v1/{kind}/missing", headers=bearer(key)).get_json())
        r = client.put(f"/api/v1/{kind}", json={kind: [{"code": "x"}]}, headers=bearer(key))
        check(f"/api/v1/{kind}", "put", 422, r.get_json())
        # A documented request body is accepted as it is documented.
        body = {kind: [{k: v for k, v in e.items() if k != "position"} for e in listing[kind]]}
        request_schema = doc["paths"][f"/api/v1/{kind}"]["put"]["requestBody"]["content"]["application/json"]["schema"]
        Draft202012Validator({**request_schema, "components": doc["components"]}).validate(body)
        r = client.put(f"/api/v1/{kind}", json=body, headers=bearer(key))
        assert r.status_code == 200, r.text
        check(f"/api/v1/{kind}", "put", 200, r.get_json())
