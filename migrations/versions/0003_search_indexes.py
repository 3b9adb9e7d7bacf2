"""search indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 15:30:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('ix_customers_tenant_phone')
        batch_op.create_index('ix_customers_tenant_phones', ['tenant_id', 'phone', 'phone_alt', 'id'], unique=False)
        batch_op.create_index('ix_customers_tenant_lower_name', ['tenant_id', sa.text('lower(name)')], unique=False)
        batch_op.create_index('ix_customers_tenant_lower_email', ['tenant_id', sa.text('lower(email)')], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('ix_customers_tenant_lower_email')
        batch_op.drop_index('ix_customers_tenant_lower_name')
        batch_op.drop_index('ix_customers_tenant_phones')
        batch_op.create_index('ix_customers_tenant_phone', ['tenant_id', 'phone'], unique=False)
