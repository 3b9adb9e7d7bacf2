"""A tenant with at least one row in every tenant-owned table, for the isolation tests.

When a new tenant-owned table arrives, add a row for it here: test_tenancy fails until
every table has one.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import select

from saas.auth import services as auth_services
from saas.auth.models import Tenant, User
from saas.clock import now_utc
from saas.customers.models import (
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
from saas.db import bind_tenant
from saas.loyalty import ledger
from saas.loyalty import services as loyalty
from saas.settings import services as settings_services
from saas.settings.models import Department, Location, TransactionKind


@dataclass
class Seeded:
    tenant: Tenant
    owner: User
    api_key: str
    customer_ref: str
    only_codes: dict = field(default_factory=dict)   # list kind -> a code only this tenant has


def seed_tenant(app, make_tenant, add_member, industry: str = "hotel", tag: str = "a") -> Seeded:
    tenant, owner = make_tenant(industry=industry, name=f"Tenant {tag.upper()}")
    add_member(tenant, "manager")
    add_member(tenant, "staff")
    s = app.extensions["huitou_db"].new_session()
    try:
        bind_tenant(s, tenant.id, owner.id)
        auth_services.create_invitation(s, f"invitee-{tag}@example.com", "staff", owner, 7)
        _key, full = settings_services.create_api_key(s, f"PMS {tag}", owner.id)
        revoked, _ = settings_services.create_api_key(s, f"Old {tag}", owner.id)
        settings_services.revoke_api_key(s, revoked.id)
        only = {}
        for kind in ("locations", "departments", "transaction-kinds"):
            code = f"{tag}-only-{kind}"[:40]
            settings_services.save_entry(s, kind, {"code": code, "name_zh": f"{tag} 专属", "name_en": f"{tag} only"})
            only[kind] = code
        location = s.scalar(select(Location).where(Location.code == only["locations"]))
        department = s.scalar(select(Department).where(Department.code == only["departments"]))
        kind = s.scalar(select(TransactionKind).where(TransactionKind.is_default.is_(True)))
        customer = Customer(name=f"Customer {tag}", address_as="王先生", phone=f"1380000{tag.encode().hex()[:4]}",
                            email=f"c-{tag}@example.com", external_ref=f"REF-{tag}", card_number=f"CARD-{tag}",
                            location_id=location.id)
        s.add(customer)
        s.flush()
        tx = Transaction(customer_id=customer.id, kind_id=kind.id, location_id=location.id,
                         department_id=department.id, staff_user_id=owner.id,
                         occurred_on=dt.date(2026, 11, 1), amount=Decimal("1280.00"), external_id=f"TX-{tag}")
        s.add(tx)
        s.flush()
        # Loyalty: a referral, an award (account, earn entry), a reward and its redemption
        # (redeem entry, lot allocation).
        friend = Customer(name=f"Friend {tag}", external_ref=f"REF-{tag}-friend")
        s.add(friend)
        s.flush()
        loyalty.set_referrer(s, friend, customer, owner.id)
        loyalty.award(s, tx, customer, owner.id, dt.date(2026, 11, 1))
        reward = loyalty.save_reward(s, {"code": f"{tag}-reward", "name_zh": f"{tag} 礼品", "name_en": f"{tag} gift",
                                         "points_cost": "1", "stock": "10"})
        ledger.redeem(s, loyalty.programme_of(s), customer, dt.date(2026, 11, 20), reward=reward,
                      staff_user_id=owner.id)
        s.add_all([
            CustomerContact(customer_id=customer.id, name=f"Buyer {tag}", role="采购经理", phone="13900000000"),
            Preference(customer_id=customer.id, category="room", key="pillow", value="firm",
                       recorded_by_id=owner.id, location_id=location.id),
            ContactLog(customer_id=customer.id, channel="call", occurred_at=now_utc(), outcome="booked",
                       staff_user_id=owner.id, location_id=location.id),
            AuditEntry(actor_user_id=owner.id, action="export", object_type="customer", object_id=customer.id),
            ImportJob(kind="customers", filename=f"{tag}.csv", content=b"name\nx\n", created_by_id=owner.id),
            ImportMapping(kind="customers", mapping={"name": "name"}),
            IdempotencyRecord(key=f"idem-{tag}", request_hash="0" * 64, status_code=201, response={}),
        ])
        s.commit()
    finally:
        s.close()
    return Seeded(tenant=tenant, owner=owner, api_key=full, customer_ref=f"REF-{tag}", only_codes=only)
