"""Ops commands: flask db upgrade, tenants create, api-keys create, demo load, jobs tick,
loyalty verify."""
from __future__ import annotations

import datetime as dt
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select

from saas import clock
from saas.auth import services as auth_services
from saas.auth.models import INDUSTRIES, Tenant
from saas.db import bind_tenant, get_db
from saas.errors import ValidationFailed


def _fail(exc: ValidationFailed) -> None:
    for field, messages in exc.errors.items():
        for m in messages:
            click.echo(f"error: {field + ': ' if field else ''}{m}", err=True)
    sys.exit(1)


db_cli = AppGroup("db", help="Database schema (Alembic).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations up to REVISION (default: head)."""
    from saas.migrate import upgrade

    upgrade(current_app.config, revision)
    click.echo(f"database at {revision}")


tenants_cli = AppGroup("tenants", help="Tenants (businesses).")


@tenants_cli.command("create")
@click.option("--name", required=True)
@click.option("--industry", required=True, type=click.Choice(INDUSTRIES))
@click.option("--owner-email", required=True)
@click.option("--owner-password", required=True)
@click.option("--owner-name", default=None, help="defaults to the part of the email before @")
@click.option("--language", type=click.Choice(["zh_CN", "en"]), default=None)
def tenants_create(name, industry, owner_email, owner_password, owner_name, language) -> None:
    """Create a tenant from its industry preset, with its owner; prints the slug last."""
    s = get_db().new_session()
    try:
        tenant, _user = auth_services.create_tenant(
            s, name=name, industry=industry, owner_name=owner_name or owner_email.split("@")[0],
            owner_email=owner_email, password=owner_password, language=language)
        s.commit()
    except ValidationFailed as exc:
        s.rollback()
        _fail(exc)
    finally:
        s.close()
    click.echo(tenant.slug)


@tenants_cli.command("list")
def tenants_list() -> None:
    """List tenants: slug, industry, name."""
    s = get_db().new_session()
    try:
        for t in s.scalars(select(Tenant).order_by(Tenant.slug)):
            click.echo(f"{t.slug}\t{t.industry}\t{t.name}")
    finally:
        s.close()


api_keys_cli = AppGroup("api-keys", help="API keys of a tenant.")


@api_keys_cli.command("create")
@click.option("--tenant", "slug", required=True, help="the tenant's slug")
@click.option("--name", required=True)
def api_keys_create(slug: str, name: str) -> None:
    """Create an API key for a tenant; prints the key (shown only once) last."""
    from saas.settings import services as settings_services

    s = get_db().new_session()
    try:
        tenant = s.scalar(select(Tenant).where(Tenant.slug == slug))
        if tenant is None:
            click.echo(f"error: no tenant with the slug {slug!r}", err=True)
            sys.exit(1)
        bind_tenant(s, tenant.id)
        try:
            _key, full = settings_services.create_api_key(s, name, None)
        except ValidationFailed as exc:
            _fail(exc)
        s.commit()
    finally:
        s.close()
    click.echo(full)


demo_cli = AppGroup("demo", help="Demo tenants.")


@demo_cli.command("load")
@click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="the demo's 'today' (default: today)")
def demo_load(as_of) -> None:
    """Load one demo tenant per industry preset, unless it exists already."""
    from saas import demo

    day = as_of.date() if as_of else clock.today("Asia/Shanghai")
    for line in demo.load_all(get_db(), day):
        click.echo(line)


jobs_cli = AppGroup("jobs", help="Scheduled work.")


@jobs_cli.command("tick")
@click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="the day to run the jobs for (default: today in each tenant's time zone)")
def jobs_tick(as_of) -> None:
    """Run every due job for every tenant. Idempotent: running twice for a day changes nothing."""
    from saas import jobs

    day: dt.date | None = as_of.date() if as_of else None
    for line in jobs.tick(get_db(), day):
        click.echo(line)


loyalty_cli = AppGroup("loyalty", help="The loyalty ledger.")


@loyalty_cli.command("verify")
def loyalty_verify() -> None:
    """Check that every customer's cached points balance equals the sum of their ledger
    entries, in every tenant. Lists each mismatch and exits 1 when there is one."""
    from saas.customers.models import Customer
    from saas.loyalty import ledger
    from saas.loyalty.services import accounts_count

    database = get_db()
    s = database.new_session(read_only=True)
    try:
        tenants = [(t.id, t.slug) for t in s.scalars(select(Tenant).order_by(Tenant.slug))]
    finally:
        s.close()
    mismatches = accounts = 0
    for tenant_id, slug in tenants:
        s = database.new_session(read_only=True)
        try:
            bind_tenant(s, tenant_id)
            wrong = ledger.verify(s)
            accounts += accounts_count(s)
            refs = dict(s.execute(select(Customer.id, Customer.external_ref)
                                  .where(Customer.id.in_([cid for cid, _, _ in wrong]))).all()) if wrong else {}
        finally:
            s.rollback()
            s.close()
        for customer_id, cached, total in wrong:
            ref = refs.get(customer_id)
            click.echo(f"mismatch: tenant {slug} customer {customer_id}{f' (ref {ref})' if ref else ''}: "
                       f"cached balance {cached}, sum of entries {total}")
        mismatches += len(wrong)
    if mismatches:
        click.echo(f"{mismatches} mismatched balances in {len(tenants)} tenants", err=True)
        sys.exit(1)
    click.echo(f"ok: {accounts} accounts in {len(tenants)} tenants, every cached balance equals its ledger")


def register_cli(app: Flask) -> None:
    for group in (db_cli, tenants_cli, api_keys_cli, demo_cli, jobs_cli, loyalty_cli):
        app.cli.add_command(group)
