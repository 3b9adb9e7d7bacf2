"""Running the Alembic migrations, and the row-level security helpers they use."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from saas.config import ROOT
from saas.db import make_engine

TENANT_PREDICATE = "tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(app_config: dict, revision: str = "head") -> None:
    """Migrate the database of ``app_config`` to ``revision``; on PostgreSQL, grant the
    app role (DATABASE_APP_ROLE) the right to use the tables, subject to RLS."""
    url = app_config.get("MIGRATION_DATABASE_URL") or app_config["DATABASE_URL"]
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)
    role = app_config.get("DATABASE_APP_ROLE")
    if role and not url.startswith("sqlite"):
        engine = make_engine(url)
        with engine.begin() as conn:
            quoted = conn.dialect.identifier_preparer.quote(role)
            conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
            conn.execute(text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}"))
        engine.dispose()


def enable_rls(op, table: str, extra_read: str | None = None) -> None:
    """Row-level security on a tenant-owned table (PostgreSQL only; a no-op elsewhere).

    FORCE makes the policy apply to the table owner too; only superusers and roles with
    BYPASSRLS escape it. ``extra_read`` widens what may be read (not written).
    """
    if op.get_bind().dialect.name != "postgresql":
        return
    using = f"({TENANT_PREDICATE})" + (f" OR ({extra_read})" if extra_read else "")
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({using}) WITH CHECK ({TENANT_PREDICATE})")
