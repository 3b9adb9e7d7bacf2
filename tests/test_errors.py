"""Unknown pages, unexpected failures and the one-transaction-per-request promise."""
from __future__ import annotations

import logging
import re

from sqlalchemy import func, select

from saas.auth.models import Tenant
from saas.dashboard import services as dashboard_services
from saas.settings import services as settings_services
from tests.conftest import PASSWORD, login


def test_unknown_page_is_a_friendly_404(client):
    r = client.get("/no-such-page")
    assert r.status_code == 404
    assert "Page not found" in r.text and "<html" in r.text


def test_unexpected_error_shows_reference_that_is_logged(app, client, make_tenant, monkeypatch, caplog):
    _t, owner = make_tenant()
    login(client, owner.email)

    def boom(*a, **kw):
        raise RuntimeError("kaput")

    monkeypatch.setattr(dashboard_services, "overview", boom)
    with caplog.at_level(logging.ERROR, logger="huitou"):
        r = client.get("/dashboard")
    assert r.status_code == 500
    ref = re.search(r"Reference: ([0-9a-f]{12})", r.text).group(1)
    assert any(ref in rec.getMessage() for rec in caplog.records)
    assert "kaput" not in r.text


def test_a_failure_midway_writes_nothing(app, client, monkeypatch, caplog):
    def boom(*a, **kw):
        raise RuntimeError("preset broke")

    monkeypatch.setattr(settings_services, "apply_preset", boom)
    with caplog.at_level(logging.CRITICAL, logger="huitou"):
        r = client.post("/signup", data={"business_name": "Half", "industry": "hotel", "owner_name": "H",
                                         "email": "h@example.com", "password": PASSWORD, "language": "en",
                                         "timezone": "UTC", "currency": "CNY"})
    assert r.status_code == 500
    s = app.extensions["huitou_db"].new_session(read_only=True)
    assert s.scalar(select(func.count()).select_from(Tenant)) == 0
    s.close()


def test_api_errors_are_json(client):
    r = client.get("/api/v1/tenant")
    assert r.status_code == 401
    assert r.json["error"]["code"]
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json["error"]["code"] == "not_found"


def test_a_unique_clash_at_the_same_moment_is_a_409_not_a_500(app, client, make_tenant, monkeypatch):
    from sqlalchemy.exc import IntegrityError

    _t, owner = make_tenant()
    login(client, owner.email)

    def clash(*a, **kw):
        raise IntegrityError("INSERT ...", {}, Exception("duplicate key value"))

    monkeypatch.setattr(settings_services, "save_entry", clash)
    r = client.post("/settings/departments", data={"code": "spa", "name_zh": "水疗", "name_en": "Spa"})
    assert r.status_code == 409
    assert "Someone else saved the same thing at the same moment" in r.text
