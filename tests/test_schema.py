"""The schema keeps the Citus invariants, and the migrations build exactly the models."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import ForeignKeyConstraint, UniqueConstraint

import saas.models  # noqa: F401  (registers every table)
from saas.db import GLOBAL_TABLES, Base, TenantScoped
from saas.migrate import PHONE_GRAM_POSITIONS, PHONE_GRAMS_TABLE, PHONE_SEARCH_TABLE

TENANT_TABLES = [t for t in Base.metadata.sorted_tables if t.name not in GLOBAL_TABLES]


def test_every_non_global_table_is_tenant_scoped():
    mapped = {m.local_table.name for m in Base.registry.mappers if issubclass(m.class_, TenantScoped)}
    assert {t.name for t in TENANT_TABLES} == mapped
    assert len(TENANT_TABLES) >= 8


@pytest.mark.parametrize("table", TENANT_TABLES, ids=lambda t: t.name)
def test_tenant_table_invariants(table):
    assert table.columns.keys()[0] == "tenant_id", "tenant_id must be the first column"
    assert [c.name for c in table.primary_key.columns] == ["tenant_id", "id"]
    for fk in table.constraints:
        if not isinstance(fk, ForeignKeyConstraint):
            continue
        target = fk.referred_table.name
        if target in GLOBAL_TABLES:
            continue
        pairs = {(e.parent.name, e.column.name) for e in fk.elements}
        assert ("tenant_id", "tenant_id") in pairs, f"{table.name} -> {target} must include tenant_id"
    for uq in table.constraints:
        if isinstance(uq, UniqueConstraint):
            assert "tenant_id" in uq.columns.keys(), f"unique {uq.name} must include tenant_id"
    for ix in table.indexes:
        if ix.unique:
            assert "tenant_id" in ix.columns.keys()


def _include_name(name, type_, parent_names):
    # The FTS5 table of the phone search (SQLite) and its shadow tables, and the phone n-gram
    # tables, are made by migrations 0004 and 0006 (saas.migrate), not by a model.
    made_by_migrations = (PHONE_SEARCH_TABLE, PHONE_GRAMS_TABLE, PHONE_GRAM_POSITIONS)
    return not (type_ == "table" and name and name.startswith(made_by_migrations))


def _include_object(dialect):
    def include(obj, name, type_, reflected, compare_to):
        # An index the model declares for one database only (.ddl_if(dialect=...)), such as
        # the pg_trgm GIN indexes, exists only there.
        ddl_if = getattr(obj, "_ddl_if", None)
        if type_ == "index" and ddl_if is not None and ddl_if.dialect not in (None, dialect):
            return False
        return True
    return include


def test_migrations_match_the_models(app):
    engine = app.extensions["huitou_db"].engine
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "include_name": _include_name, "include_object": _include_object(conn.dialect.name)})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
