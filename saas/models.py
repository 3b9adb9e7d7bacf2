"""Import every domain's models so Base.metadata knows all tables (Alembic, tests)."""
from saas.auth.models import Invitation, Membership, Tenant, User  # noqa: F401
from saas.customers.models import (  # noqa: F401
    AuditEntry,
    ContactLog,
    Customer,
    CustomerContact,
    IdempotencyRecord,
    ImportJob,
    ImportMapping,
    Preference,
    Transaction,
)
from saas.db import Base  # noqa: F401
from saas.loyalty.models import LedgerEntry, LotAllocation, LoyaltyAccount, Referral, Reward  # noqa: F401
from saas.settings.models import ApiKey, Department, Location, ProgrammeSection, TransactionKind  # noqa: F401
