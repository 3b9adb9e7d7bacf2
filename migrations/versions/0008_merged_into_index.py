"""customers merged into a customer, found by an index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:50:00.000000

A customer's tier counts the points earned on the records merged into it (their
ledger entries stay theirs: the ledger is append-only), so every award looks up the
customers merged into its customer. Partial: only merged customers are in it.
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

WHERE = sa.text("merged_into_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_customers_tenant_merged_into", "customers", ["tenant_id", "merged_into_id", "id"],
                    unique=False, sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index("ix_customers_tenant_merged_into", table_name="customers")
