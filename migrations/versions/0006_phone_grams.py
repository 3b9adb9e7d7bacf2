"""phone grams: any four characters of a phone number, per tenant (SQLite)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 17:30:00.000000

The FTS5 trigram index of migration 0004 holds every tenant's numbers: at a million
customers, a four-digit fragment matches about a thousand numbers across the database and
each is a random read. ``customer_phone_grams`` (tenant_id, gram, customer_rowid), clustered
by tenant and gram, keeps the lookup inside the tenant. Kept by triggers
(saas.migrate.create_phone_grams). PostgreSQL keeps its pg_trgm indexes.
"""
from alembic import op

from saas.migrate import create_phone_grams, drop_phone_grams

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_phone_grams(op)


def downgrade() -> None:
    drop_phone_grams(op)
