"""The customer search behind /customers and /frontdesk: any part of the phone numbers
through the trigram index (FTS5 on SQLite, pg_trgm on PostgreSQL) kept in step with every
write path, the start of the name in index order, the "more than N" cap, and the plans."""
from __future__ import annotations

import datetime as dt
import random
import uuid

import phonenumbers
import pytest
from sqlalchemy import create_engine, delete, event, insert, select, text, update
from sqlalchemy.orm import Session

from saas.customers import imports, records, services
from saas.customers.models import Customer
from saas.db import bind_tenant
from saas.migrate import PHONE_GRAM, PHONE_GRAMS_TABLE, PHONE_SEARCH_TABLE
from tests.conftest import login
from tests.test_imports import csv_bytes


def names(page) -> list[str]:
    return [c.name for c in page.items]


def found(s, query: str) -> set[str]:
    return set(names(services.search_customers(s, query, region="CN")))


def assert_index_consistent(app):
    """SQLite: the FTS5 index holds exactly the phone numbers of the customers table, and
    the n-gram table exactly every four characters of every number, per tenant."""
    if app.config["DB_KIND"] != "sqlite":
        return
    engine = create_engine(app.config["OWNER_URL"])
    try:
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {PHONE_SEARCH_TABLE}({PHONE_SEARCH_TABLE}, rank) "
                              "VALUES ('integrity-check', 1)"))
            stored = set(conn.execute(text(f"SELECT tenant_id, gram, customer_rowid FROM {PHONE_GRAMS_TABLE}")))
            expected = set()
            for tenant_id, rowid, phone, alt in conn.execute(
                    text("SELECT tenant_id, rowid, phone, phone_alt FROM customers")):
                for number in (phone or "", alt or ""):
                    expected |= {(tenant_id, number[i:i + PHONE_GRAM], rowid)
                                 for i in range(len(number) - PHONE_GRAM + 1)}
            assert stored == expected
    finally:
        engine.dispose()


# --- any part of the phone numbers ------------------------------------------------------------

@pytest.fixture
def phones(hotel, make_customer):
    tenant, owner = hotel
    make_customer(tenant, name="王伟", phone="+8613812345678")
    make_customer(tenant, name="李娜", phone="+8618655554444", phone_alt="+8613900001111")
    make_customer(tenant, name="Harbour Trading", phone="+862166668888")
    make_customer(tenant, name="Old Number", phone="13512340000")  # saved before E.164
    return tenant, owner


@pytest.mark.parametrize("query, expected", [
    ("1234", {"王伟", "Old Number"}),      # the middle of the number
    ("2345", {"王伟"}),
    ("234", {"王伟", "Old Number"}),        # three digits: still the trigram index
    ("5678", {"王伟"}),                      # the last four
    ("138 1234 5678", {"王伟"}),             # the whole number, typed with spaces
    ("555", {"李娜"}),
    ("0000111", {"李娜"}),                   # the other number, its middle
    ("+86139", {"李娜"}),                    # the other number, its start
    ("021 6666", {"Harbour Trading"}),       # trunk prefix: +86 21 6666...
    ("0086 2166", {"Harbour Trading"}),      # 00 + country code
    ("13", {"王伟", "李娜", "Old Number"}),  # too short for trigrams: the start of either number
    ("4321", set()),
])
def test_phone_any_part(phones, tenant_session, query, expected):
    tenant, _owner = phones
    assert found(tenant_session(tenant), query) == expected


def test_changed_erased_merged_and_deleted_phones_leave_the_index(app, phones, write_session, tenant_session):
    tenant, owner = phones
    s = write_session(tenant)
    wang = s.scalar(select(Customer).where(Customer.name == "王伟"))
    li = s.scalar(select(Customer).where(Customer.name == "李娜"))
    harbour = s.scalar(select(Customer).where(Customer.name == "Harbour Trading"))
    wang.phone = "+8613700009999"
    li.phone_alt = ""
    s.commit()
    check = tenant_session(tenant)
    assert found(check, "2345") == set() and found(check, "0000999") == {"王伟"}
    assert found(check, "0000111") == set() and found(check, "555") == {"李娜"}
    assert_index_consistent(app)

    records.erase_customer(s, wang.id, owner.id, dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))
    other = Customer(name="Harbour Trading Ltd", phone="+862166660000")
    s.add(other)
    s.commit()
    records.merge_customers(s, other.id, harbour.id, owner.id)
    s.commit()
    check = tenant_session(tenant)
    assert found(check, "0000999") == set()                 # erased: its number is gone
    # Merged away: not listed; its number was added to the survivor as the other number.
    assert found(check, "66668888") == {"Harbour Trading Ltd"}
    assert found(check, "6666") == {"Harbour Trading Ltd"}
    assert_index_consistent(app)

    s.execute(delete(Customer).where(Customer.name == "Old Number"))
    s.commit()
    assert found(tenant_session(tenant), "1234") == set()
    assert_index_consistent(app)


def test_bulk_import_and_update_keep_the_index(app, hotel, tenant_session, write_session):
    tenant, _owner = hotel
    rows = [["ref", "name", "phone"], ["R-1", "赵敏", "139 8765 4321"], ["R-2", "钱进", "+44 20 7946 0958"]]

    def run(content):
        s = app.extensions["huitou_db"].new_session()
        try:
            bind_tenant(s, tenant.id)
            result = imports.import_file(s, "customers", "c.csv", content,
                                         {"ref": "ref", "name": "name", "phone": "phone"})
            s.commit()
            return result
        finally:
            s.close()

    assert run(csv_bytes(rows)).created == 2
    assert found(tenant_session(tenant), "8765") == {"赵敏"}
    assert found(tenant_session(tenant), "79460") == {"钱进"}
    rows[1][2] = "139 1111 2222"
    assert run(csv_bytes(rows)).updated == 1                 # the importer's bulk UPDATE
    check = tenant_session(tenant)
    assert found(check, "8765") == set() and found(check, "1111222") == {"赵敏"}
    # A Core bulk UPDATE of many rows at once.
    s = write_session(tenant)
    s.execute(update(Customer).where(Customer.external_ref == "R-2").values(phone_alt="+8615012345678"))
    s.commit()
    assert found(tenant_session(tenant), "5012345") == {"钱进"}
    assert_index_consistent(app)
    # A big import fills the index in one statement instead of row by row (the insert
    # trigger is set aside meanwhile): its customers are found and the trigger is back.
    many = [["ref", "name", "phone"]] + [[f"M-{i}", f"批量{i}", f"138{i:08d}"] for i in range(600)]
    assert run(csv_bytes(many)).created == 600
    assert found(tenant_session(tenant), "00000599") == {"批量599"}
    assert_index_consistent(app)
    s = write_session(tenant)
    s.add(Customer(name="After the import", phone="+8613999990000"))
    s.commit()
    assert found(tenant_session(tenant), "9999000") == {"After the import"}
    assert_index_consistent(app)


def test_the_generator_bulk_load_is_searchable(tmp_path):
    """bench/generate.py inserts with executemany on SQLite: the triggers index it too."""
    from bench import generate
    from saas.db import make_engine

    url = f"sqlite:///{tmp_path / 'gen.db'}"
    summary = generate.generate(url, tenants=2, customers=40, transactions=60, big_tenant=30, log=lambda *a: None)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {PHONE_SEARCH_TABLE}({PHONE_SEARCH_TABLE}, rank) "
                              "VALUES ('integrity-check', 1)"))
            tenant_id = conn.execute(text("SELECT id FROM tenants WHERE slug = :s"),
                                     {"s": summary["first_tenant"]["slug"]}).scalar_one()
        with Session(engine) as s:
            bind_tenant(s, uuid.UUID(tenant_id))
            customers = list(s.scalars(select(Customer)))
            assert len(customers) == 30
            for c in customers[:10]:
                middle = c.phone[5:11]   # +86 1xx [xxxxxx] xx
                assert c.name in found(s, middle)
    finally:
        engine.dispose()


def test_search_stays_in_the_tenant(make_tenant, make_customer, tenant_session):
    a, _ = make_tenant("hotel")
    b, _ = make_tenant("hotel")
    make_customer(a, name="王一", phone="+8613812345678", card_number="C-1")
    make_customer(b, name="王二", phone="+8613812345678", card_number="C-1")
    make_customer(b, name="王三", phone="+8613912345678")
    s = tenant_session(a)
    for query in ("1234", "5678", "王", "C-1", "+86138", "138 1234 5678", ""):
        page = services.search_customers(s, query, region="CN")
        assert names(page) == ["王一"] and page.total == 1, query


def test_triggers_and_index_exist_after_all_migrations(app):
    """A later migration that recreates the customers table (SQLite batch mode) drops its
    triggers: it must call saas.migrate.drop_phone_search / create_phone_search."""
    if app.config["DB_KIND"] != "sqlite":
        engine = create_engine(app.config["INSPECT_URL"])
        try:
            with engine.connect() as conn:
                indexes = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'customers'"))
                              .scalars())
                assert conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")).scalar() == 1
        finally:
            engine.dispose()
        assert {"ix_customers_phone_trgm", "ix_customers_phone_alt_trgm"} <= indexes
        return
    engine = create_engine(app.config["OWNER_URL"])
    try:
        with engine.connect() as conn:
            triggers = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                             "AND tbl_name = 'customers'")).scalars())
    finally:
        engine.dispose()
    assert {"customers_phone_search_insert", "customers_phone_search_update",
            "customers_phone_search_delete"} <= triggers
    assert_index_consistent(app)


# --- names, order, pages and the cap ----------------------------------------------------------

def test_name_and_other_matches_merge_in_name_order_across_pages(hotel, write_session, tenant_session):
    tenant, _owner = hotel
    s = write_session(tenant)
    s.add_all([Customer(name=f"王{i:02d}", phone=f"+86139{i:08d}") for i in range(12)])
    # Found by phone or card, not by name: they sort among the name matches.
    s.add_all([Customer(name="阿王", phone="+8613712345678"), Customer(name="黄王", external_ref="王0"),
               Customer(name="Zhang", phone_alt="+8613600000000")])
    s.commit()
    check = tenant_session(tenant)
    pages = [services.search_customers(check, "王0", p, 4, region="CN") for p in (1, 2, 3)]
    assert [names(p) for p in pages] == [["王00", "王01", "王02", "王03"], ["王04", "王05", "王06", "王07"],
                                         ["王08", "王09", "黄王"]]
    assert pages[0].total == 11 and pages[0].pages == 3 and not pages[0].more
    by_phone = services.search_customers(check, "1234567", 1, 50, region="CN")
    assert names(by_phone) == ["阿王"]
    everyone = services.search_customers(check, "", 1, 50)
    assert everyone.total == 15 and names(everyone)[:2] == ["Zhang", "王00"] and names(everyone)[-2:] == ["阿王", "黄王"]


def test_names_case_insensitively_in_order(hotel, make_customer, tenant_session):
    tenant, _owner = hotel
    for name in ("alice Wong", "Alan Lee", "ALBERT KING", "Bob"):
        make_customer(tenant, name=name)
    check = tenant_session(tenant)
    assert names(services.search_customers(check, "al")) == ["Alan Lee", "ALBERT KING", "alice Wong"]
    assert names(services.search_customers(check, "AL")) == ["Alan Lee", "ALBERT KING", "alice Wong"]


def test_more_than_the_count_limit(client, hotel, write_session, tenant_session, monkeypatch):
    tenant, owner = hotel
    monkeypatch.setattr(services, "SEARCH_COUNT_LIMIT", 10)
    s = write_session(tenant)
    s.add_all([Customer(name=f"王{i:02d}", phone=f"+86138{i:08d}") for i in range(14)])
    s.commit()
    check = tenant_session(tenant)
    page = services.search_customers(check, "王", 1, 4)
    assert (page.total, page.more, page.pages, names(page)) == (10, True, 3, ["王00", "王01", "王02", "王03"])
    assert names(services.search_customers(check, "王", 99, 4)) == ["王08", "王09"]  # clamped to the cap
    phone_page = services.search_customers(check, "+86138", 1, 4)   # phone matches count too
    assert (phone_page.total, phone_page.more) == (10, True)
    small = services.search_customers(check, "王1", 1, 4)
    assert (small.total, small.more) == (4, False)
    login(client, owner.email)
    r = client.get("/customers", query_string={"q": "王"}, headers={"HX-Request": "true"})
    assert "More than 10 customers match: type more to narrow the search." in r.text
    r = client.get("/frontdesk", query_string={"q": "王"}, headers={"HX-Request": "true"})
    assert "Showing 8 of more than 10 matches: type more to narrow the search." in r.text


# --- plans --------------------------------------------------------------------------------------

def test_queries_use_the_search_indexes(app, hotel, make_customer, tenant_session, write_session):
    tenant, _owner = hotel
    make_customer(tenant, name="王伟", phone="+8613812345678")
    s = tenant_session(tenant)
    if app.config["DB_KIND"] == "sqlite":
        plan = " | ".join(r[-1] for r in s.execute(text(
            "EXPLAIN QUERY PLAN SELECT id FROM customers WHERE tenant_id = :t AND rowid IN "
            f"(SELECT rowid FROM {PHONE_SEARCH_TABLE} WHERE {PHONE_SEARCH_TABLE} MATCH :q)"),
            {"t": tenant.id.hex, "q": '"5678"'}))
        # (With statistics of a big tenant, bench/search.py shows the rowid lookup that follows.)
        assert "customer_phone_search VIRTUAL TABLE INDEX 0:M" in plan
        plan = " | ".join(r[-1] for r in s.execute(text(
            "EXPLAIN QUERY PLAN SELECT count(*) FROM customers WHERE tenant_id = :t AND merged_into_id IS NULL "
            "AND lower(name) >= :a AND lower(name) < :b"), {"t": tenant.id.hex, "a": "王", "b": "王\U0010ffff"}))
        assert "COVERING INDEX ix_customers_tenant_lower_name" in plan
        return
    # PostgreSQL: a tenant big enough for the planner to prefer the indexes, then the plans
    # of the statements the search really runs.
    rng = random.Random(9)
    writer = write_session(tenant)
    writer.execute(insert(Customer), [
        {"tenant_id": tenant.id, "id": uuid.uuid4(), "name": f"Guest {i:05d}",
         "phone": f"+86{rng.choice(['138', '139', '186'])}{rng.randrange(10 ** 8):08d}"} for i in range(5000)])
    writer.commit()
    inspect = create_engine(app.config["INSPECT_URL"])
    try:
        with inspect.begin() as conn:
            conn.execute(text("ANALYZE customers"))
    finally:
        inspect.dispose()
    def plans(query):
        statements = []
        engine = s.get_bind()

        def capture(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().startswith("SELECT") and "customers" in statement:
                statements.append((statement, parameters))

        event.listen(engine, "before_cursor_execute", capture)
        try:
            services.search_customers(s, query, region="CN")
        finally:
            event.remove(engine, "before_cursor_execute", capture)
        return "\n".join(row[0] for statement, params in statements
                         for row in s.connection().exec_driver_sql("EXPLAIN " + statement, params))

    # Under row-level security only leakproof operators reach an index: name ^@, =, ^@ on
    # the phones, card, ref, email and plate (a BitmapOr).
    assert "Index Cond: ((tenant_id = " in plans("王") and "ix_customers_tenant_name" in plans("王")
    phone_plan = plans("5678")
    assert "BitmapOr" in phone_plan and "uq_customers_tenant_id_card_number" in phone_plan
    assert "ix_customers_tenant_phones" in plans("+861381234")
    # Any part of the phone (LIKE '%5678%' or '%5678%' on phone_alt) is its own arm: under
    # row-level security it is a scan of the tenant's rows unless a superuser declares
    # textlike() LEAKPROOF, after which the pg_trgm GIN indexes are used (see the report in
    # bench/RESULTS.md, 2026-11-23 "search trigrams").


# --- formatting ---------------------------------------------------------------------------------

def test_fast_chinese_mobile_format_matches_phonenumbers():
    rng = random.Random(5)
    for prefix in range(130, 200):
        for _ in range(20):
            number = f"+86{prefix}{rng.randrange(10 ** 8):08d}"
            parsed = phonenumbers.parse(number, None)
            assert services.format_phone(number, "CN") == phonenumbers.format_number(
                parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
            assert services.mask_phone(number, "CN") == f"{prefix}****{number[-4:]}"
    assert services.format_phone("+862166668888", "CN") == "021 6666 8888"
    assert services.format_phone("+442079460958", "CN") == "+44 20 7946 0958"
    assert services.format_phone("+8613812345678", "GB") == "+86 138 1234 5678"
    assert services.mask_phone("+442079460958", "GB") == "020****0958"  # as shown: 020 7946 0958
    assert services.mask_phone("+862038819962", "CN") == "020****9962"  # 020 3881 9962
