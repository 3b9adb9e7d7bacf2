"""The tenant wall: ORM guards, PostgreSQL row-level security, a walk over every route
with another tenant's ids, the role matrix and CSRF on every state-changing route."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text
from werkzeug.routing import UUIDConverter

from saas.auth.models import Membership
from saas.customers.models import Customer
from saas.db import GLOBAL_TABLES, Base, TenancyError, bind_tenant
from saas.settings.presets import PROGRAMME_SECTIONS
from saas.settings.services import LIST_MODELS
from saas.web import API, LOGIN, PUBLIC, access_level
from tests.conftest import PASSWORD, login
from tests.seed import seed_tenant

TENANT_TABLES = [t for t in Base.metadata.sorted_tables if t.name not in GLOBAL_TABLES]
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

# Routes whose URL carries a credential rather than an object id: whoever holds the link
# may use it, by design (an invitation, a password reset). They are tested in test_auth.
TOKEN_ROUTES = {"auth.accept_invitation", "auth.reset_password"}

# Who may call each endpoint. A new route must be added here (test_every_route_is_in_the_matrix).
EXPECTED_ACCESS = {
    "dashboard.home": PUBLIC,
    "dashboard.index": "staff",
    "auth.signup": PUBLIC,
    "auth.login": PUBLIC,
    "auth.logout": LOGIN,
    "auth.choose_tenant": LOGIN,
    "auth.forgot_password": PUBLIC,
    "auth.reset_password": PUBLIC,
    "auth.account": LOGIN,
    "auth.set_language": PUBLIC,
    "auth.staff": "owner",
    "auth.deactivate_member": "owner",
    "auth.activate_member": "owner",
    "auth.change_role": "owner",
    "auth.revoke_invitation": "owner",
    "auth.accept_invitation": PUBLIC,
    "customers.index": "staff",
    "customers.new": "staff",
    "customers.detail": "staff",
    "customers.edit": "staff",
    "customers.new_transaction": "staff",
    "settings.index": "owner",
    "settings.entries": "owner",
    "settings.edit_entry": "owner",
    "settings.programme": "owner",
    "settings.edit_programme": "owner",
    "settings.loyalty_form": "owner",
    "settings.api_keys": "owner",
    "settings.revoke_api_key": "owner",
    "customers.frontdesk": "staff",
    "customers.guest_card": "staff",
    "customers.new_preference": "staff",
    "customers.delete_preference": "staff",
    "customers.new_contact_log": "staff",
    "customers.new_decision_maker": "staff",
    "customers.edit_decision_maker": "staff",
    "customers.delete_decision_maker": "staff",
    "customers.edit_contact_log": "staff",
    "imports.index": "manager",
    "imports.mapping": "manager",
    "imports.preview": "manager",
    "imports.run": "manager",
    "imports.job": "manager",
    "imports.progress": "manager",
    "imports.errors_csv": "manager",
    "imports.export_customers_csv": "manager",
    "imports.export_customers_xlsx": "manager",
    "imports.export_transactions_csv": "manager",
    "imports.export_transactions_xlsx": "manager",
    "imports.export_log": "manager",
    "records.merge": "manager",
    "records.reassign": "owner",
    "records.export": "manager",
    "records.erase": "owner",
    "records.audit": "manager",
    # --- loyalty: guest card panel and dialogs (saas/loyalty/card_views.py)
    "loyalty.customer_loyalty": "staff",
    "loyalty.redeem": "staff",
    "loyalty.points_value": "staff",
    "loyalty.adjust": "staff",
    "loyalty.void_redemption": "manager",
    "loyalty.reverse_transaction": "manager",
    # --- end loyalty card
    # --- loyalty: rewards, goodwill report, statements, programme preview (saas/loyalty/admin_views.py)
    "loyalty.rewards": "staff",
    "loyalty.new_reward": "manager",
    "loyalty.edit_reward": "manager",
    "loyalty.set_reward_active": "manager",
    "loyalty.goodwill": "manager",
    "loyalty.statement": "staff",
    "loyalty.statement_pdf": "staff",
    "loyalty.referrer": "staff",
    "settings.programme_preview": "owner",
    # --- end loyalty admin
}


def _rules(app):
    return [r for r in app.url_map.iter_rules() if r.endpoint != "static"]


def _string_values(seeded, name: str) -> list[str] | None:
    """Values to try for a non-UUID URL argument, or None when the name is unknown."""
    if name == "kind":
        return list(LIST_MODELS)
    if name == "section":
        return list(PROGRAMME_SECTIONS)
    if name == "code":
        return list(seeded.only_codes.values())
    if name == "ref":
        return [seeded.customer_ref]
    return None


def _tenant_rows(app, tenant_id) -> dict[str, list[tuple]]:
    """Every row of the tenant in every tenant-owned table (read as the schema owner)."""
    from sqlalchemy import create_engine

    engine = create_engine(app.config["INSPECT_URL"])
    try:
        with engine.connect() as conn:
            return {t.name: sorted(map(tuple, conn.execute(select(t).where(t.c.tenant_id == tenant_id))), key=str)
                    for t in TENANT_TABLES}
    finally:
        engine.dispose()


@pytest.fixture
def two_tenants(app, make_tenant, add_member):
    a = seed_tenant(app, make_tenant, add_member, "hotel", "a")
    b = seed_tenant(app, make_tenant, add_member, "bank", "b")
    return a, b


def test_seed_fills_every_tenant_table(app, two_tenants):
    a, _b = two_tenants
    rows = _tenant_rows(app, a.tenant.id)
    empty = [name for name, r in rows.items() if not r]
    assert empty == [], f"tests/seed.py must create a row in: {empty}"


def test_every_url_argument_has_a_substitution(app, two_tenants):
    a, _b = two_tenants
    for rule in _rules(app):
        if rule.endpoint in TOKEN_ROUTES:
            continue
        for arg, conv in rule._converters.items():
            if isinstance(conv, UUIDConverter):
                continue
            assert _string_values(a, arg) is not None, (
                f"{rule.rule}: teach tests/test_tenancy.py::_string_values about <{arg}>")


def _urls_naming_a(app, a):
    """(rule, url) for every route and every id of tenant A's rows that fits its arguments."""
    rows = _tenant_rows(app, a.tenant.id)
    a_ids = sorted({str(r[1]) for table_rows in rows.values() for r in table_rows})
    for rule in _rules(app):
        if rule.endpoint in TOKEN_ROUTES or not rule.arguments:
            continue
        convs = rule._converters
        uuid_args = [n for n, c in convs.items() if isinstance(c, UUIDConverter)]
        string_args = {n: _string_values(a, n) for n in convs if n not in uuid_args}
        base = {n: vals[0] for n, vals in string_args.items()}
        if uuid_args:
            for kind_combo in ([{}] if not string_args else [{n: v} for n, vals in string_args.items() for v in vals]):
                for ident in a_ids:
                    values = {**base, **kind_combo, **{n: uuid.UUID(ident) for n in uuid_args}}
                    yield rule, rule.build(values, append_unknown=False)[1]
        else:
            for name in ("code", "ref"):
                for value in string_args.get(name, []):
                    yield rule, rule.build({**base, name: value}, append_unknown=False)[1]


def test_tenant_b_gets_404_for_every_url_naming_tenant_a_objects(app, two_tenants):
    a, b = two_tenants
    before = _tenant_rows(app, a.tenant.id)
    web, api = app.test_client(), app.test_client()
    assert login(web, b.owner.email).status_code == 303
    checked = 0
    for rule, url in _urls_naming_a(app, a):
        is_api = rule.endpoint.startswith("api.")
        headers = {"Authorization": f"Bearer {b.api_key}"} if is_api else {}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            kwargs = {"json": {}} if is_api and method in WRITE_METHODS else {}
            r = (api if is_api else web).open(url, method=method, headers=headers, **kwargs)
            if ({"code", "ref"} & rule.arguments) and method in WRITE_METHODS:
                # PUT by code creates B's own entry; A's rows must stay as they were (below).
                assert r.status_code < 500, (method, url, r.status_code)
            else:
                assert r.status_code == 404, (method, url, r.status_code, r.text[:300])
            checked += 1
    assert checked > 50
    assert _tenant_rows(app, a.tenant.id) == before, "tenant A's data changed"


ROLES = ["anonymous", "staff", "manager", "owner"]
RANK = {"staff": 0, "manager": 1, "owner": 2}


def test_every_route_is_in_the_matrix(app):
    endpoints = {r.endpoint for r in _rules(app)}
    missing = sorted(e for e in endpoints if e not in EXPECTED_ACCESS and not e.startswith("api."))
    assert missing == [], f"add these endpoints to EXPECTED_ACCESS: {missing}"
    for endpoint in endpoints:
        expected = API if endpoint.startswith("api.") and endpoint != "api.openapi" else EXPECTED_ACCESS.get(endpoint, PUBLIC)
        assert access_level(app, endpoint) == expected, endpoint


def _any_url(rule, seeded) -> str:
    values = {}
    for name, conv in rule._converters.items():
        if isinstance(conv, UUIDConverter):
            values[name] = uuid.uuid4()
        elif rule.endpoint in TOKEN_ROUTES:
            values[name] = "not-a-token"
        else:
            values[name] = _string_values(seeded, name)[0]
    return rule.build(values, append_unknown=False)[1]


def test_role_matrix(app, make_tenant, add_member):
    seeded = seed_tenant(app, make_tenant, add_member, "dealership", "m")
    s = app.extensions["huitou_db"].new_session(read_only=True)
    bind_tenant(s, seeded.tenant.id)
    members = {m.role: m.user_id for m in s.scalars(select(Membership))}
    from saas.auth.models import User
    emails = {role: s.get(User, uid).email for role, uid in members.items()}
    s.close()

    clients = {}

    def client_for(role):
        # One logged-in client per role; logging out ends it, so log in again after that.
        if role not in clients:
            c = app.test_client()
            if role != "anonymous":
                assert login(c, emails[role]).status_code == 303
            clients[role] = c
        return clients[role]

    for rule in _rules(app):
        level = access_level(app, rule.endpoint)
        url = _any_url(rule, seeded)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for role in ROLES:
                c = client_for(role)
                headers = {}
                if level == API and role != "anonymous":
                    headers["Authorization"] = f"Bearer {seeded.api_key}"
                r = c.open(url, method=method, headers=headers, data={} if method in WRITE_METHODS else None)
                if rule.endpoint == "auth.logout":
                    clients.pop(role, None)
                to_login = r.status_code == 302 and "/login" in r.headers.get("Location", "")
                where = (rule.endpoint, method, role, r.status_code)
                if level == PUBLIC:
                    assert r.status_code != 403, where
                elif level == API:
                    if role == "anonymous":
                        assert r.status_code == 401, where
                    else:
                        assert r.status_code not in (401, 403), where
                elif role == "anonymous":
                    assert to_login, where
                elif level == LOGIN:
                    assert r.status_code != 403 and not to_login, where
                elif RANK[role] < RANK[level]:
                    assert r.status_code == 403, where
                else:
                    assert r.status_code != 403 and not to_login, where
                assert r.status_code < 500, where


def test_csrf_required_on_every_state_changing_route(app, make_tenant, add_member, monkeypatch):
    seeded = seed_tenant(app, make_tenant, add_member, "hotel", "c")
    c = app.test_client()
    login(c, seeded.owner.email)
    monkeypatch.setitem(app.config, "WTF_CSRF_ENABLED", True)
    checked = 0
    for rule in _rules(app):
        if rule.endpoint.startswith("api."):
            continue  # bearer-key API: no cookies, no CSRF
        for method in sorted(rule.methods & WRITE_METHODS):
            r = c.open(_any_url(rule, seeded), method=method, data={})
            assert r.status_code == 400, (rule.endpoint, method, r.status_code)
            checked += 1
    assert checked >= 10


def test_htmx_sends_the_csrf_token_in_a_header(app, make_tenant, monkeypatch):
    import re

    _t, owner = make_tenant()
    monkeypatch.setitem(app.config, "WTF_CSRF_ENABLED", True)
    c = app.test_client()
    page = c.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = c.post("/login", data={"email": owner.email, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303
    page = c.get("/dashboard").text
    header_token = re.search(r'hx-headers=\'\{"X-CSRFToken": "([^"]+)"\}\'', page).group(1)
    r = c.post("/language", data={"lang": "en"}, headers={"X-CSRFToken": header_token, "HX-Request": "true"})
    assert r.status_code == 303
    r = c.post("/language", data={"lang": "en"}, headers={"HX-Request": "true"})
    assert r.status_code == 400


def test_orm_guard_fails_closed_and_refuses_foreign_writes(app, two_tenants):
    a, b = two_tenants
    database = app.extensions["huitou_db"]
    s = database.new_session(read_only=True)
    try:
        with pytest.raises(TenancyError):
            s.scalars(select(Customer)).all()
        s.rollback()
        bind_tenant(s, b.tenant.id)
        names = {c.name for c in s.scalars(select(Customer))}
        assert names == {"Customer b", "Friend b"}
        s.add(Customer(tenant_id=a.tenant.id, name="planted"))
        with pytest.raises(TenancyError):
            s.flush()
    finally:
        s.rollback()
        s.close()
    # An object of tenant A cannot be changed through a session bound to tenant B.
    s = database.new_session()
    try:
        bind_tenant(s, a.tenant.id)
        a_customer = s.scalar(select(Customer))
        bind_tenant(s, b.tenant.id)
        a_customer.name = "hijacked"
        with pytest.raises(TenancyError):
            s.flush()
    finally:
        s.rollback()
        s.close()


def test_postgres_row_level_security_is_a_second_wall(app, two_tenants):
    if app.config["DB_KIND"] != "postgresql":
        pytest.skip("row-level security exists only on PostgreSQL")
    a, b = two_tenants
    engine = app.extensions["huitou_db"].engine  # the app role, not the table owner
    with engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar() == "huitou_app"
        conn.rollback()
        with conn.begin():
            # No tenant set: nothing is visible.
            for t in TENANT_TABLES:
                assert conn.execute(text(f"SELECT count(*) FROM {t.name}")).scalar() == 0, t.name
        with conn.begin():
            conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(b.tenant.id)})
            for t in TENANT_TABLES:
                seen = set(conn.execute(text(f"SELECT DISTINCT tenant_id FROM {t.name}")).scalars())
                assert seen <= {b.tenant.id}, t.name
            assert conn.execute(text("SELECT count(*) FROM customers WHERE tenant_id = :a"),
                                {"a": str(a.tenant.id)}).scalar() == 0
        with pytest.raises(Exception, match="row-level security"):
            with conn.begin():
                conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(b.tenant.id)})
                conn.execute(text("INSERT INTO customers (tenant_id, id, name, address_as, phone, email, "
                                  "classification, notes, created_at) VALUES (:a, :i, 'x', '', '', '', "
                                  "'general', '', now())"), {"a": str(a.tenant.id), "i": str(uuid.uuid4())})
        with conn.begin():
            conn.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(b.tenant.id)})
            n = conn.execute(text("UPDATE customers SET name = 'x' WHERE tenant_id = :a"),
                             {"a": str(a.tenant.id)}).rowcount
            assert n == 0
