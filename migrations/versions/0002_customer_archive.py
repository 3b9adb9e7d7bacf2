"""customer archive

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:23:55.583114
"""
from alembic import op
import sqlalchemy as sa

from saas.migrate import enable_rls

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('actor_user_id', sa.Uuid(), nullable=True),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('object_type', sa.String(length=40), nullable=False),
    sa.Column('object_id', sa.Uuid(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_user_id'], ['users.id'], name=op.f('fk_audit_log_actor_user_id_users')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_audit_log_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_tenant_object', ['tenant_id', 'object_type', 'object_id'], unique=False)

    op.create_table('idempotency_records',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_idempotency_records_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_idempotency_records')),
    sa.UniqueConstraint('tenant_id', 'key', name=op.f('uq_idempotency_records_tenant_id_key'))
    )
    op.create_table('import_jobs',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('total_rows', sa.Integer(), nullable=False),
    sa.Column('processed_rows', sa.Integer(), nullable=False),
    sa.Column('created_rows', sa.Integer(), nullable=False),
    sa.Column('updated_rows', sa.Integer(), nullable=False),
    sa.Column('skipped_rows', sa.Integer(), nullable=False),
    sa.Column('errors', sa.JSON(), nullable=False),
    sa.Column('created_by_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_import_jobs_created_by_id_users')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_import_jobs_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_import_jobs'))
    )
    op.create_table('import_mappings',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('mapping', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_import_mappings_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_import_mappings')),
    sa.UniqueConstraint('tenant_id', 'kind', name=op.f('uq_import_mappings_tenant_id_kind'))
    )
    op.create_table('contact_logs',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('channel', sa.String(length=12), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=500), nullable=False),
    sa.Column('next_step', sa.String(length=255), nullable=False),
    sa.Column('staff_user_id', sa.Uuid(), nullable=True),
    sa.Column('location_id', sa.Uuid(), nullable=True),
    sa.ForeignKeyConstraint(['staff_user_id'], ['users.id'], name=op.f('fk_contact_logs_staff_user_id_users')),
    sa.ForeignKeyConstraint(['tenant_id', 'customer_id'], ['customers.tenant_id', 'customers.id'], name=op.f('fk_contact_logs_tenant_id_customer_id_customers')),
    sa.ForeignKeyConstraint(['tenant_id', 'location_id'], ['locations.tenant_id', 'locations.id'], name=op.f('fk_contact_logs_tenant_id_location_id_locations')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_contact_logs_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_contact_logs'))
    )
    with op.batch_alter_table('contact_logs', schema=None) as batch_op:
        batch_op.create_index('ix_contact_logs_tenant_customer', ['tenant_id', 'customer_id', 'occurred_at'], unique=False)

    op.create_table('customer_contacts',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('role', sa.String(length=60), nullable=False),
    sa.Column('phone', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id', 'customer_id'], ['customers.tenant_id', 'customers.id'], name=op.f('fk_customer_contacts_tenant_id_customer_id_customers')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_customer_contacts_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_customer_contacts'))
    )
    with op.batch_alter_table('customer_contacts', schema=None) as batch_op:
        batch_op.create_index('ix_customer_contacts_tenant_customer', ['tenant_id', 'customer_id'], unique=False)

    op.create_table('preferences',
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('customer_id', sa.Uuid(), nullable=False),
    sa.Column('category', sa.String(length=20), nullable=False),
    sa.Column('key', sa.String(length=60), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.Column('recorded_by_id', sa.Uuid(), nullable=True),
    sa.Column('location_id', sa.Uuid(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_preferences_recorded_by_id_users')),
    sa.ForeignKeyConstraint(['tenant_id', 'customer_id'], ['customers.tenant_id', 'customers.id'], name=op.f('fk_preferences_tenant_id_customer_id_customers')),
    sa.ForeignKeyConstraint(['tenant_id', 'location_id'], ['locations.tenant_id', 'locations.id'], name=op.f('fk_preferences_tenant_id_location_id_locations')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_preferences_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', 'id', name=op.f('pk_preferences'))
    )
    with op.batch_alter_table('preferences', schema=None) as batch_op:
        batch_op.create_index('ix_preferences_tenant_customer', ['tenant_id', 'customer_id'], unique=False)

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('phone_alt', sa.String(length=32), nullable=False, server_default=""))
        batch_op.add_column(sa.Column('plate_number', sa.String(length=20), nullable=False, server_default=""))
        batch_op.add_column(sa.Column('owner_user_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('birthday', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('gender', sa.String(length=10), nullable=False, server_default=""))
        batch_op.add_column(sa.Column('company', sa.String(length=120), nullable=False, server_default=""))
        batch_op.add_column(sa.Column('job_title', sa.String(length=60), nullable=False, server_default=""))
        batch_op.add_column(sa.Column('company_industry', sa.String(length=60), nullable=False, server_default=""))
        batch_op.add_column(sa.Column('company_size', sa.String(length=20), nullable=False, server_default=""))
        batch_op.add_column(sa.Column('consent_phone', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('consent_sms', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('consent_email', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column('merged_into_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_customers_tenant_email', ['tenant_id', 'email'], unique=False)
        batch_op.create_index('ix_customers_tenant_owner', ['tenant_id', 'owner_user_id'], unique=False)
        batch_op.create_index('ix_customers_tenant_plate', ['tenant_id', 'plate_number'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_customers_owner_user_id_users'), 'users', ['owner_user_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_customers_tenant_id_merged_into_id_customers'), 'customers', ['tenant_id', 'merged_into_id'], ['tenant_id', 'id'])

    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('country', sa.String(length=2), nullable=False, server_default="CN"))

    for table in ("audit_log", "idempotency_records", "import_jobs", "import_mappings", "contact_logs",
                  "customer_contacts", "preferences"):
        enable_rls(op, table)


def downgrade() -> None:
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('country')

    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_customers_tenant_id_merged_into_id_customers'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_customers_owner_user_id_users'), type_='foreignkey')
        batch_op.drop_index('ix_customers_tenant_plate')
        batch_op.drop_index('ix_customers_tenant_owner')
        batch_op.drop_index('ix_customers_tenant_email')
        batch_op.drop_column('erased_at')
        batch_op.drop_column('merged_into_id')
        batch_op.drop_column('tags')
        batch_op.drop_column('consent_email')
        batch_op.drop_column('consent_sms')
        batch_op.drop_column('consent_phone')
        batch_op.drop_column('company_size')
        batch_op.drop_column('company_industry')
        batch_op.drop_column('job_title')
        batch_op.drop_column('company')
        batch_op.drop_column('gender')
        batch_op.drop_column('birthday')
        batch_op.drop_column('owner_user_id')
        batch_op.drop_column('plate_number')
        batch_op.drop_column('phone_alt')

    with op.batch_alter_table('preferences', schema=None) as batch_op:
        batch_op.drop_index('ix_preferences_tenant_customer')

    op.drop_table('preferences')
    with op.batch_alter_table('customer_contacts', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_contacts_tenant_customer')

    op.drop_table('customer_contacts')
    with op.batch_alter_table('contact_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_contact_logs_tenant_customer')

    op.drop_table('contact_logs')
    op.drop_table('import_mappings')
    op.drop_table('import_jobs')
    op.drop_table('idempotency_records')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_tenant_object')

    op.drop_table('audit_log')
