"""Scheduled work, run by ``flask jobs tick`` (cron, or the Docker scheduler process).

A job is a function ``job(session, as_of) -> str | None`` registered with ``@job``; it
runs once per tenant per day, inside that tenant's bound session, and must be
idempotent (running it twice for the same day changes nothing). Later issues register
point expiry, churn evaluation, survey windows and overdue flags here.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from saas import clock
from saas.auth.models import Tenant
from saas.db import Database, bind_tenant

log = logging.getLogger("huitou.jobs")

JOBS: dict[str, Callable[[Session, dt.date], str | None]] = {}


def job(name: str):
    """Register a daily job under ``name``."""
    def deco(fn):
        JOBS[name] = fn
        return fn
    return deco


def tick(database: Database, as_of: dt.date | None = None) -> Iterator[str]:
    """Run every registered job for every tenant, each tenant in its own transaction.

    ``as_of`` defaults to today in each tenant's time zone. Yields one line per tenant.
    """
    s = database.new_session()
    try:
        tenants = list(s.execute(select(Tenant.id, Tenant.slug, Tenant.timezone).order_by(Tenant.slug)))
    finally:
        s.close()
    for tid, slug, tz in tenants:
        day = as_of or clock.today(tz)
        s = database.new_session()
        try:
            bind_tenant(s, tid)
            results = []
            for name, fn in JOBS.items():
                out = fn(s, day)
                results.append(f"{name}: {out or 'nothing due'}")
            s.commit()
        except Exception:
            s.rollback()
            log.exception("jobs failed for tenant %s on %s", slug, day)
            raise
        finally:
            s.close()
        yield f"{slug} {day.isoformat()} " + ("; ".join(results) if results else "no jobs registered")
    if database.engine.dialect.name == "sqlite":
        # SQLite plans with the statistics ANALYZE left; without fresh ones it takes a
        # tenant for ten customers and scans it. "optimize" re-analyses what changed.
        with database.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA optimize")
        yield "sqlite: statistics refreshed (PRAGMA optimize)"
