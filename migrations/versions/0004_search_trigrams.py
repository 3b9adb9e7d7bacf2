"""search trigrams: any part of the phone numbers, and the name order

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:10:00.000000

- Any part of the phone numbers: on SQLite an FTS5 trigram table (customer_phone_search)
  kept in step with customers by triggers (saas.migrate.create_phone_search); on
  PostgreSQL the pg_trgm extension (trusted: the database owner may create it) and GIN
  indexes on phone and phone_alt.
- The start of the other number: (tenant_id, phone_alt).
- ix_customers_tenant_lower_name becomes (tenant_id, lower(name), name, id, merged_into_id):
  the search lists customers in this order and counts matches from the index alone.
"""
from alembic import op
import sqlalchemy as sa

from saas.migrate import create_phone_search, drop_phone_search

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index('ix_customers_tenant_lower_name', table_name='customers')
    op.create_index('ix_customers_tenant_lower_name', 'customers',
                    ['tenant_id', sa.text('lower(name)'), 'name', 'id', 'merged_into_id'], unique=False)
    op.create_index('ix_customers_tenant_phone_alt', 'customers', ['tenant_id', 'phone_alt'], unique=False)
    if dialect == 'postgresql':
        op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
        op.create_index('ix_customers_phone_trgm', 'customers', ['phone'], unique=False,
                        postgresql_using='gin', postgresql_ops={'phone': 'gin_trgm_ops'})
        op.create_index('ix_customers_phone_alt_trgm', 'customers', ['phone_alt'], unique=False,
                        postgresql_using='gin', postgresql_ops={'phone_alt': 'gin_trgm_ops'})
    else:
        create_phone_search(op)
        # SQLite plans the search well only with statistics (without them it assumes ~10
        # customers per tenant and scans the tenant's rows): give an existing database some,
        # quickly (a sample of each index). See the lead's report: run ANALYZE/optimize
        # regularly as well.
        op.execute('PRAGMA analysis_limit = 1000')
        op.execute('ANALYZE customers')


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == 'postgresql':
        op.drop_index('ix_customers_phone_alt_trgm', table_name='customers')
        op.drop_index('ix_customers_phone_trgm', table_name='customers')
        # pg_trgm stays: other objects may use it, and dropping it needs its owner.
    else:
        drop_phone_search(op)
    op.drop_index('ix_customers_tenant_phone_alt', table_name='customers')
    op.drop_index('ix_customers_tenant_lower_name', table_name='customers')
    op.create_index('ix_customers_tenant_lower_name', 'customers', ['tenant_id', sa.text('lower(name)')],
                    unique=False)
