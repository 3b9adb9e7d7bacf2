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


def append_only(op, table: str) -> None:
    """Make the database itself refuse UPDATE and DELETE on ``table`` (the ledger).

    A TRUNCATE (PostgreSQL) and dropping the triggers (SQLite) stay possible for whoever
    owns the schema: the app role may do neither.
    """
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION huitou_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
            "USING ERRCODE = 'insufficient_privilege'; END $$"
        )
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION huitou_refuse_change()")
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END")


def drop_append_only(op, table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")


# The index of any part of the customers' phone numbers on SQLite: an FTS5 table with the
# trigram tokenizer over customers.phone and customers.phone_alt ("external content": it
# stores only the index and reads the numbers from customers by rowid), kept in step by
# triggers on every INSERT, UPDATE OF phone/phone_alt and DELETE — the ORM, the importer's
# bulk statements and the benchmark generator alike. PostgreSQL uses pg_trgm GIN indexes
# on the same columns instead (declared in saas/customers/models.py).
#
# SQLite drops a table's triggers with the table: a later migration that makes Alembic
# recreate ``customers`` (batch mode "move and copy", e.g. to change a column type) must
# call drop_phone_search(op) before and create_phone_search(op) after it, which also
# rebuilds the index (the copy may renumber the rowids). tests/test_search.py checks that
# the triggers exist and the index is consistent after all migrations.
PHONE_SEARCH_TABLE = "customer_phone_search"
_PHONE_SEARCH_TRIGGERS = {
    "customers_phone_search_insert":
        "AFTER INSERT ON customers BEGIN "
        "INSERT INTO customer_phone_search(rowid, phone, phone_alt) VALUES (new.rowid, new.phone, new.phone_alt); "
        "END",
    "customers_phone_search_update":
        "AFTER UPDATE OF phone, phone_alt ON customers "
        "WHEN old.phone IS NOT new.phone OR old.phone_alt IS NOT new.phone_alt BEGIN "
        "INSERT INTO customer_phone_search(customer_phone_search, rowid, phone, phone_alt) "
        "VALUES ('delete', old.rowid, old.phone, old.phone_alt); "
        "INSERT INTO customer_phone_search(rowid, phone, phone_alt) VALUES (new.rowid, new.phone, new.phone_alt); "
        "END",
    "customers_phone_search_delete":
        "AFTER DELETE ON customers BEGIN "
        "INSERT INTO customer_phone_search(customer_phone_search, rowid, phone, phone_alt) "
        "VALUES ('delete', old.rowid, old.phone, old.phone_alt); "
        "END",
}


def create_phone_search(op) -> None:
    """Create (SQLite) the trigram index of the customers' phone numbers and its triggers,
    and fill it from the rows already there. A no-op on other databases."""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"CREATE VIRTUAL TABLE {PHONE_SEARCH_TABLE} USING fts5(phone, phone_alt, content='customers', "
               "content_rowid='rowid', tokenize='trigram')")
    for name, body in _PHONE_SEARCH_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"INSERT INTO {PHONE_SEARCH_TABLE}({PHONE_SEARCH_TABLE}) VALUES ('rebuild')")


def insert_customers_in_bulk(conn, insert) -> None:
    """Run ``insert()`` (many new customers) with the phone index filled once for all of
    them afterwards instead of by its trigger row by row (SQLite; elsewhere just
    ``insert()``). The trigger is dropped and re-created inside the caller's transaction:
    a rollback restores it, and no other writer runs meanwhile (writes are serialised)."""
    if conn.dialect.name != "sqlite":
        insert()
        return
    triggers = {"customers_phone_search_insert": _PHONE_SEARCH_TRIGGERS["customers_phone_search_insert"]}
    grams = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = "
                                 "'customers_phone_grams_insert'").first() is not None
    if grams:
        triggers["customers_phone_grams_insert"] = _PHONE_GRAM_TRIGGERS["customers_phone_grams_insert"]
    first = conn.exec_driver_sql("SELECT coalesce(max(rowid), 0) FROM customers").scalar()
    for name in triggers:
        conn.exec_driver_sql(f"DROP TRIGGER {name}")
    insert()
    conn.exec_driver_sql(f"INSERT INTO {PHONE_SEARCH_TABLE}(rowid, phone, phone_alt) "
                         "SELECT rowid, phone, phone_alt FROM customers WHERE rowid > ?", (first,))
    if grams:
        conn.exec_driver_sql(f"INSERT OR IGNORE INTO {PHONE_GRAMS_TABLE} {_fill_grams_sql('c.rowid > ?')}",
                             (first, first))
    for name, body in triggers.items():
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {body}")


def drop_phone_search(op) -> None:
    """Drop (SQLite) the trigram index of the phone numbers and its triggers."""
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in _PHONE_SEARCH_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute(f"DROP TABLE IF EXISTS {PHONE_SEARCH_TABLE}")


# Any four characters of a phone number, per tenant (SQLite): the FTS5 index above is one for
# all tenants, so a fragment's matches in the other tenants' customers cost random reads; this
# table is clustered by (tenant_id, gram), so a search reads only its own tenant's candidates.
# Kept by triggers like the FTS index; the importer fills it once per bulk insert.
PHONE_GRAMS_TABLE = "customer_phone_grams"
PHONE_GRAM_POSITIONS = "phone_gram_positions"
PHONE_GRAM = 4


def _grams_of(row: str) -> str:
    """SELECT of the (tenant_id, gram, customer_rowid) of ``row`` (new or old) phones."""
    return " UNION ".join(
        f"SELECT {row}.tenant_id, substr({row}.{col}, n, {PHONE_GRAM}), {row}.rowid FROM {PHONE_GRAM_POSITIONS} "
        f"WHERE n <= length({row}.{col}) - {PHONE_GRAM - 1}" for col in ("phone", "phone_alt"))


_PHONE_GRAM_TRIGGERS = {
    "customers_phone_grams_insert":
        f"AFTER INSERT ON customers BEGIN INSERT OR IGNORE INTO {PHONE_GRAMS_TABLE} {_grams_of('new')}; END",
    "customers_phone_grams_update":
        "AFTER UPDATE OF phone, phone_alt, tenant_id ON customers "
        "WHEN old.phone IS NOT new.phone OR old.phone_alt IS NOT new.phone_alt BEGIN "
        f"DELETE FROM {PHONE_GRAMS_TABLE} WHERE tenant_id = old.tenant_id AND customer_rowid = old.rowid "
        f"AND gram IN (SELECT substr(old.phone, n, {PHONE_GRAM}) FROM {PHONE_GRAM_POSITIONS} "
        f"UNION SELECT substr(old.phone_alt, n, {PHONE_GRAM}) FROM {PHONE_GRAM_POSITIONS}); "
        f"INSERT OR IGNORE INTO {PHONE_GRAMS_TABLE} {_grams_of('new')}; END",
    "customers_phone_grams_delete":
        "AFTER DELETE ON customers BEGIN "
        f"DELETE FROM {PHONE_GRAMS_TABLE} WHERE tenant_id = old.tenant_id AND customer_rowid = old.rowid "
        f"AND gram IN (SELECT substr(old.phone, n, {PHONE_GRAM}) FROM {PHONE_GRAM_POSITIONS} "
        f"UNION SELECT substr(old.phone_alt, n, {PHONE_GRAM}) FROM {PHONE_GRAM_POSITIONS}); END",
}


def _fill_grams_sql(where: str) -> str:
    return " UNION ALL ".join(
        f"SELECT c.tenant_id, substr(c.{col}, p.n, {PHONE_GRAM}), c.rowid FROM customers c "
        f"JOIN {PHONE_GRAM_POSITIONS} p ON p.n <= length(c.{col}) - {PHONE_GRAM - 1} WHERE {where}"
        for col in ("phone", "phone_alt"))


def create_phone_grams(op) -> None:
    """Create (SQLite) the per-tenant phone n-gram table, its triggers, and fill it."""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"CREATE TABLE {PHONE_GRAM_POSITIONS} (n INTEGER PRIMARY KEY)")
    op.execute(f"INSERT INTO {PHONE_GRAM_POSITIONS}(n) VALUES " + ", ".join(f"({i})" for i in range(1, 41)))
    op.execute(f"CREATE TABLE {PHONE_GRAMS_TABLE} (tenant_id CHAR(32) NOT NULL, gram VARCHAR({PHONE_GRAM}) NOT NULL, "
               "customer_rowid INTEGER NOT NULL, PRIMARY KEY (tenant_id, gram, customer_rowid)) WITHOUT ROWID")
    for name, body in _PHONE_GRAM_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"INSERT OR IGNORE INTO {PHONE_GRAMS_TABLE} {_fill_grams_sql('1')}")


def drop_phone_grams(op) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in _PHONE_GRAM_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute(f"DROP TABLE IF EXISTS {PHONE_GRAMS_TABLE}")
    op.execute(f"DROP TABLE IF EXISTS {PHONE_GRAM_POSITIONS}")
