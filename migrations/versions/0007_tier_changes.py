"""tier changes: every upgrade, lowering review and undone upgrade of a customer's tier

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 16:05:00.000000

A reversed transaction takes back the upgrade it carried (saas.loyalty.ledger
``undo_upgrades``): that needs the state each upgrade replaced, which the account row
alone does not keep. Append-only, like the ledger.
"""
from alembic import op
import sqlalchemy as sa

from saas.migrate import append_only, drop_append_only, enable_rls

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

TABLE = "loyalty_tier_changes"


def upgrade() -> None:
    op.create_table(TABLE,
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('changed_on', sa.Date(), nullable=False),
    sa.Column('from_code', sa.String(length=40), nullable=False),
    sa.Column('from_since', sa.Date(), nullable=True),
    sa.Column('from_review_on', sa.Date(), nullable=True),
    sa.Column('to_code', sa.String(length=40), nullable=False),
    sa.Column('to_since', sa.Date(), nullable=True),
    sa.Column('to_review_on', sa.Date(), nullable=True),
    sa.Column('transaction_id', sa.Uuid(), nullable=True),
    sa.Column('undoes_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id', 'customer_id'], ['customers.tenant_id', 'customers.id'], name=op.f('fk_loyalty_tier_changes_tenant_id_customer_id_customers')),
    sa.ForeignKeyConstraint(['tenant_id', 'transaction_id'], ['transactions.tenant_id', 'transactions.id'], name=op.f('fk_loyalty_tier_changes_tenant_id_transaction_id_transactions')),
    sa.ForeignKeyConstraint(['tenant_id', 'undoes_id'], ['loyalty_tier_changes.tenant_id', 'loyalty_tier_changes.id'], name=op.f('fk_loyalty_tier_changes_tenant_id_undoes_id_loyalty_tier_changes')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_loyalty_tier_changes_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_loyalty_tier_changes'))
    )
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.create_index('ix_loyalty_tier_changes_tenant_customer', ['tenant_id', 'customer_id'], unique=False)
    enable_rls(op, TABLE)
    append_only(op, TABLE)


def downgrade() -> None:
    drop_append_only(op, TABLE)
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.drop_index('ix_loyalty_tier_changes_tenant_customer')
    op.drop_table(TABLE)
