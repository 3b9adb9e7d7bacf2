"""Fixtures: every database test runs on SQLite and on a real PostgreSQL server."""
from __future__ import annotations

import itertools
import os
import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from saas import create_app
from saas.auth import services as auth_services
from saas.db import Base, bind_tenant
from saas.extensions import limiter
from saas.migrate import upgrade
from tests import pg

PASSWORD = "correct horse battery"

# Password hashing is deliberately slow; the tests check logic, not the hash strength.
auth_services.HASH_METHOD = "pbkdf2:sha256:1000"
DB_KINDS = ["sqlite", "postgresql"]
if os.environ.get("HUITOU_TEST_DBS"):
    DB_KINDS = os.environ["HUITOU_TEST_DBS"].split(",")


def pytest_configure(config):
    """Compile the translation catalogs when a .po is newer than its .mo (so a bare pytest
    run shows the current Chinese); written to a temp file and renamed, for xdist."""
    from pathlib import Path

    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for po in Path(__file__).resolve().parent.parent.glob("saas/translations/*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as fh:
            catalog = read_po(fh)
        tmp = mo.with_suffix(f".mo.{os.getpid()}")
        with tmp.open("wb") as fh:
            write_mo(fh, catalog)
        os.replace(tmp, mo)


@pytest.fixture(scope="session")
def pg_server():
    server = pg.start()
    yield server
    server.stop()


class EnglishClient(FlaskClient):
    """A test client whose browser asks for English unless a test says otherwise (the
    product's default for a browser that states no preference is Chinese)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.environ_base.setdefault("HTTP_ACCEPT_LANGUAGE", "en")


@pytest.fixture(scope="session", params=DB_KINDS)
def app(request, tmp_path_factory):
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "test.db"
        cfg = {"DATABASE_URL": f"sqlite:///{path}"}
        owner_url = inspect_url = cfg["DATABASE_URL"]
    else:
        server = request.getfixturevalue("pg_server")
        cfg = {"DATABASE_URL": server.app_url, "MIGRATION_DATABASE_URL": server.owner_url,
               "DATABASE_APP_ROLE": "huitou_app"}
        owner_url = server.owner_url
        inspect_url = server.superuser_url  # sees through row-level security
    cfg.update(TESTING=True, WTF_CSRF_ENABLED=False, SECRET_KEY="test-secret", SERVER_NAME="localhost",
               LOGIN_FAILURES_PER_ACCOUNT="5 per hour", LOGIN_FAILURES_PER_IP="1000 per hour")
    application = create_app(cfg)
    application.test_client_class = EnglishClient
    upgrade(application.config)
    application.config["OWNER_URL"] = owner_url
    application.config["INSPECT_URL"] = inspect_url
    application.config["DB_KIND"] = request.param
    yield application
    application.extensions["huitou_db"].engine.dispose()


@pytest.fixture(scope="session")
def cleanup_engine(app):
    """The schema owner on SQLite, the superuser on PostgreSQL (it may end stray sessions)."""
    engine = create_engine(app.config["INSPECT_URL"])
    yield engine
    engine.dispose()


def empty_database(conn) -> None:
    """Delete every row of every table (the schema owner on SQLite, the superuser on
    PostgreSQL), the append-only ledger included."""
    if conn.dialect.name == "postgresql":
        # A transaction a test left open (an unread streamed response, a session not
        # closed) would block TRUNCATE for ever: end it, the test is over.
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                          "current_database() AND pid <> pg_backend_pid() AND state LIKE 'idle in%'"))
        conn.execute(text("SET LOCAL lock_timeout = '20s'"))
        conn.execute(text("TRUNCATE tenants, users CASCADE"))
        return
    # The ledger's append-only triggers refuse DELETE: set them aside meanwhile.
    triggers = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                 "AND sql LIKE '%append-only%'")).all()
    for name, _sql in triggers:
        conn.execute(text(f'DROP TRIGGER "{name}"'))
    for table in reversed(Base.metadata.sorted_tables):
        conn.execute(table.delete())
    for _name, sql in triggers:
        conn.execute(text(sql))


@pytest.fixture(autouse=True)
def _clean(request):
    """Empty every table after each test that used the app, and reset rate limits."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    engine = request.getfixturevalue("cleanup_engine")
    yield
    with engine.begin() as conn:
        empty_database(conn)
    app.extensions.pop("outbox", None)
    with app.app_context():
        limiter.reset()


@pytest.fixture
def client(app):
    return app.test_client()


_seq = itertools.count(1)


@pytest.fixture
def make_tenant(app):
    """make_tenant(industry="hotel", **overrides) -> (tenant, owner user), committed."""
    from saas.auth import services as auth_services

    def factory(industry: str = "hotel", name: str | None = None, email: str | None = None,
                language: str = "en", password: str = PASSWORD):
        n = next(_seq)
        s = app.extensions["huitou_db"].new_session()
        try:
            tenant, user = auth_services.create_tenant(
                s, name=name or f"Tenant {n}", industry=industry, owner_name=f"Owner {n}",
                owner_email=email or f"owner{n}@example.com", password=password, language=language)
            user.language = language
            s.commit()
            return tenant, user
        finally:
            s.close()

    return factory


@pytest.fixture
def hotel(make_tenant):
    """A hotel tenant from its preset and its owner: (tenant, owner)."""
    return make_tenant("hotel")


@pytest.fixture
def add_member(app):
    """add_member(tenant, role) -> user, a committed active member with PASSWORD."""
    from saas.auth import services as auth_services
    from saas.auth.models import Membership, User

    def factory(tenant, role: str, email: str | None = None, language: str = "en"):
        n = next(_seq)
        s = app.extensions["huitou_db"].new_session()
        try:
            bind_tenant(s, tenant.id)
            user = auth_services.find_user(s, email) if email else None
            if user is None:
                user = User(email=email or f"{role}{n}@example.com", name=f"{role.title()} {n}",
                            password_hash=auth_services.hash_password(PASSWORD),
                            session_token=auth_services.new_session_token(), language=language)
                s.add(user)
                s.flush()
            s.add(Membership(user_id=user.id, role=role))
            s.commit()
            return user
        finally:
            s.close()

    return factory


def login(client, email: str, password: str = PASSWORD, remember: bool = False):
    data = {"email": email, "password": password}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data)


def _session_factory(app, read_only: bool):
    sessions = []

    def factory(tenant):
        s = app.extensions["huitou_db"].new_session(read_only=read_only)
        bind_tenant(s, tenant.id)
        sessions.append(s)
        return s

    return factory, sessions


@pytest.fixture
def tenant_session(app):
    """tenant_session(tenant) -> a session bound to that tenant for reading (closed after
    the test)."""
    factory, sessions = _session_factory(app, read_only=True)
    yield factory
    for s in sessions:
        s.rollback()
        s.close()


@pytest.fixture
def write_session(app):
    """write_session(tenant) -> a session bound to the tenant for service calls; commit
    yourself (closed after the test)."""
    factory, sessions = _session_factory(app, read_only=False)
    yield factory
    for s in sessions:
        s.rollback()
        s.close()


@pytest.fixture
def make_customer(write_session):
    """make_customer(tenant, **fields) -> Customer, committed."""
    from saas.customers.models import Customer

    def factory(tenant, **fields):
        s = write_session(tenant)
        fields.setdefault("name", "Test Customer")
        c = Customer(**fields)
        s.add(c)
        s.commit()
        return c

    return factory


def assert_error(r, status: int, code: str | None = None) -> dict:
    """The response is a JSON API error with this status (and code); returns the error."""
    assert r.status_code == status, r.text
    assert r.mimetype == "application/json"
    err = r.get_json()["error"]
    assert err["message"]
    if code:
        assert err["code"] == code
    return err


def csrf_from(html: str) -> str:
    m = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    assert m, "no csrf token in page"
    return m.group(1)
