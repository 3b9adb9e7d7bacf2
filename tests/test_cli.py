"""The ops commands: db upgrade, tenants create, api-keys create, jobs tick."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from saas import jobs
from saas.customers.models import Customer
from saas.settings.models import ApiKey
from tests.conftest import PASSWORD


def test_db_upgrade_is_repeatable(app):
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at head" in result.output


def test_tenants_create_prints_slug_and_api_key_works(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tenants", "create", "--name", "Riverside Motors", "--industry", "dealership",
                                 "--owner-email", "boss@riverside.example", "--owner-password", PASSWORD])
    assert result.exit_code == 0, result.output
    slug = result.output.strip().splitlines()[-1]
    assert slug == "riverside-motors"
    result = runner.invoke(args=["api-keys", "create", "--tenant", slug, "--name", "DMS"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("htk_")
    r = client.get("/api/v1/tenant", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json["name"] == "Riverside Motors"
    s = app.extensions["huitou_db"].new_session(all_tenants=True)
    assert s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.key_hash == key)) == 0  # hashed
    s.close()


def test_tenants_create_refuses_bad_input(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["tenants", "create", "--name", "X", "--industry", "hotel",
                                 "--owner-email", "a@example.com", "--owner-password", "short"])
    assert result.exit_code == 1
    assert "Use at least 10 characters." in result.output
    result = runner.invoke(args=["api-keys", "create", "--tenant", "nope", "--name", "x"])
    assert result.exit_code == 1 and "no tenant" in result.output


def test_jobs_tick_runs_each_job_once_per_tenant_in_its_own_scope(app, make_tenant, tenant_session, monkeypatch):
    t1, _ = make_tenant(name="One")
    t2, _ = make_tenant(name="Two")
    s = app.extensions["huitou_db"].new_session()
    from saas.db import bind_tenant
    bind_tenant(s, t1.id)
    s.add(Customer(name="only in one"))
    s.commit()
    s.close()
    seen = []

    def count_customers(session, as_of):
        n = session.scalar(select(func.count()).select_from(Customer))
        seen.append((as_of, n))
        return f"{n} customers"

    monkeypatch.setitem(jobs.JOBS, "count", count_customers)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["jobs", "tick", "--as-of", "2026-11-23"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("sqlite:")]
    assert len(lines) == 2 and all("2026-11-23" in line for line in lines)
    assert ("PRAGMA optimize" in result.output) == (app.config["DB_KIND"] == "sqlite")
    assert sorted(seen) == [(dt.date(2026, 11, 23), 0), (dt.date(2026, 11, 23), 1)]


def test_jobs_tick_without_jobs_says_so(app, make_tenant, monkeypatch):
    make_tenant()
    monkeypatch.setattr(jobs, "JOBS", {})
    result = app.test_cli_runner().invoke(args=["jobs", "tick", "--as-of", "2026-01-01"])
    assert result.exit_code == 0 and "no jobs registered" in result.output
