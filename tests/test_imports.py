"""Import of customers and transactions (CSV and XLSX, all or nothing, idempotent, the
CDNOW data end to end), the background import with its pages, and the exports."""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
import uuid
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import func, select

from saas.customers import imports
from saas.customers.models import AuditEntry, Customer, ImportJob, ImportMapping, Transaction
from saas.db import bind_tenant
from saas.settings.models import Department, Location, TransactionKind
from tests.conftest import csrf_from, login

CDNOW = Path(__file__).resolve().parents[2] / "shared/data/cdnow"

CUSTOMER_MAPPING = {"ref": "ref", "name": "name", "address_as": "address_as", "phone": "phone", "email": "email",
                    "card_number": "card_number", "classification": "classification", "location": "location",
                    "birthday": "birthday", "company": "company", "plate_number": "plate_number", "notes": "notes"}
TX_MAPPING = {"customer_ref": "customer_ref", "occurred_on": "occurred_on", "amount": "amount",
              "quantity": "quantity", "kind": "kind", "location": "location", "department": "department",
              "external_id": "external_id", "note": "note"}


def msgid(error) -> str:
    return imports.message_parts(error.message)[0]


def errors_at(result) -> set[tuple[int, str]]:
    return {(e.row, e.column) for e in result.errors}


def csv_bytes(rows: list[list], encoding: str = "utf-8", delimiter: str = ",") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode(encoding)


@pytest.fixture
def run_import(app):
    """run_import(tenant, kind, filename, content, mapping, **options) -> ImportResult,
    committed in a session of its own (as the background job does)."""
    def runner(tenant, kind, filename, content, mapping, **options):
        s = app.extensions["huitou_db"].new_session()
        try:
            bind_tenant(s, tenant.id)
            result = imports.import_file(s, kind, filename, content, mapping, **options)
            s.commit()
            return result
        finally:
            s.close()
    return runner


def count(tenant_session, tenant, model) -> int:
    return tenant_session(tenant).scalar(select(func.count()).select_from(model))


CUSTOMERS_CSV = [
    ["ref", "name", "address_as", "phone", "email", "card_number", "classification", "location", "birthday",
     "company", "plate_number", "notes"],
    ["PMS-1", "王伟", "王先生", "138 1234 5678", "Wang@Example.com", "VIP-1", "重要", "main", "1980-05-06",
     "华联", "沪A12345", "likes a quiet room"],
    ["PMS-2", "Li Na", "Ms Li", "+44 20 7946 0958", "", "", "potential", "", "19900102", "", "", "=1+2"],
    ["PMS-3", "Harbour Trading", "", "", "", "C-9", "", "", "", "", "", ""],
]


# --- reading files ------------------------------------------------------------------------

def test_read_table_detects_encoding_delimiter_and_xlsx():
    rows = [["姓名", "手机"], ["王小明", "13812345678"], ["李四", "13900001111"]]
    for content in (csv_bytes(rows), b"\xef\xbb\xbf" + csv_bytes(rows), csv_bytes(rows, "gbk"),
                    csv_bytes(rows, "gb18030", ";"), csv_bytes(rows, "utf-8", "\t"),
                    "\ufeff".encode("utf-16-le")[0:0] + csv_bytes(rows, "utf-16")):
        headers, data = imports.read_table("x.csv", content)
        assert headers == ["姓名", "手机"]
        assert [r for r in data] == rows[1:]
    # Short files in the encodings a Chinese business's spreadsheets come in, and one from
    # Europe: charset-normalizer alone reads the first (GBK) as Thai and Big5 decodes,
    # wrongly, as GB18030.
    for encoding, table in (
            ("gbk", [["客户编号", "姓名", "手机"], ["A-1", "王伟", "13812345678"], ["A-3", "李娜", "12"]]),
            ("big5", [["客戶編號", "姓名", "手機"], ["A-1", "陳大文", "0912345678"], ["A-2", "林小美", "0987654321"]]),
            ("cp1252", [["ref", "name", "city"], ["A-1", "Jürgen Müller", "München"],
                        ["A-2", "François Lefèvre", "Besançon"]])):
        headers, data = imports.read_table("x.csv", csv_bytes(table, encoding))
        assert [headers, *data] == table, encoding
    wb = openpyxl.Workbook()
    wb.active.append(["姓名", "生日", None])
    wb.active.append(["王小明", dt.datetime(1980, 5, 6), None])
    buf = io.BytesIO()
    wb.save(buf)
    headers, data = imports.read_table("x.xlsx", buf.getvalue())
    assert headers == ["姓名", "生日"]
    assert list(data)[0][:2] == ["王小明", dt.datetime(1980, 5, 6)]
    for name, content in (("x.xls", b"whatever"), ("x.pdf", b"%PDF"), ("x.xlsx", b"not a zip"), ("x.csv", b""),
                          ("x.csv", b"a,a\n1,2\n")):
        with pytest.raises(imports.ValidationFailed):
            imports.read_table(name, content)


def test_guess_mapping_understands_chinese_and_english_headers():
    assert imports.guess_mapping("customers", ["姓名", "手机", "会员卡号", "客户编号", "备注"]) == {
        "name": "姓名", "phone": "手机", "card_number": "会员卡号", "ref": "客户编号", "notes": "备注"}
    assert imports.guess_mapping("transactions", ["Customer ID", "日期", "金额", "Qty"]) == {
        "customer_ref": "Customer ID", "occurred_on": "日期", "amount": "金额", "quantity": "Qty"}


# --- customers ------------------------------------------------------------------------------

def test_customers_csv_happy_path(hotel, run_import, tenant_session):
    tenant, owner = hotel
    result = run_import(tenant, "customers", "c.csv", csv_bytes(CUSTOMERS_CSV), CUSTOMER_MAPPING,
                        created_by_id=owner.id)
    assert (result.created, result.updated, result.unchanged, result.errors) == (3, 0, 0, [])
    s = tenant_session(tenant)
    wang = s.scalar(select(Customer).where(Customer.external_ref == "PMS-1"))
    main = s.scalar(select(Location).where(Location.code == "main"))
    assert (wang.name, wang.address_as, wang.phone, wang.email, wang.card_number, wang.classification) == (
        "王伟", "王先生", "+8613812345678", "wang@example.com", "VIP-1", "important")
    assert (wang.location_id, wang.birthday, wang.company, wang.plate_number) == (
        main.id, dt.date(1980, 5, 6), "华联", "沪A12345")
    li = s.scalar(select(Customer).where(Customer.external_ref == "PMS-2"))
    assert (li.phone, li.birthday, li.classification, li.notes) == ("+442079460958", dt.date(1990, 1, 2),
                                                                    "potential", "=1+2")
    assert s.scalar(select(Customer).where(Customer.external_ref == "PMS-3")).classification == "general"
    audit = s.scalar(select(AuditEntry).where(AuditEntry.action == "import"))
    assert audit.actor_user_id == owner.id and audit.details["created"] == 3


def test_customer_reimport_changes_nothing_then_updates_what_changed(hotel, run_import, tenant_session):
    tenant, _owner = hotel
    content = csv_bytes(CUSTOMERS_CSV)
    run_import(tenant, "customers", "c.csv", content, CUSTOMER_MAPPING)
    again = run_import(tenant, "customers", "c.csv", content, CUSTOMER_MAPPING)
    assert (again.created, again.updated, again.unchanged, again.errors) == (0, 0, 3, [])
    assert count(tenant_session, tenant, Customer) == 3
    changed = [row[:] for row in CUSTOMERS_CSV]
    changed[1][1] = "王伟强"
    changed[2][3] = ""   # an empty cell keeps the stored phone
    third = run_import(tenant, "customers", "c.csv", csv_bytes(changed), CUSTOMER_MAPPING)
    assert (third.created, third.updated, third.unchanged) == (0, 1, 2)
    s = tenant_session(tenant)
    assert s.scalar(select(Customer.name).where(Customer.external_ref == "PMS-1")) == "王伟强"
    assert s.scalar(select(Customer.phone).where(Customer.external_ref == "PMS-2")) == "+442079460958"
    # Dedupe by card number instead: the row with card C-9 updates that customer.
    by_card = run_import(tenant, "customers", "c.csv",
                         csv_bytes([["name", "card_number"], ["Harbour Trading Ltd", "C-9"]]),
                         {"name": "name", "card_number": "card_number"}, dedupe_by="card_number")
    assert (by_card.created, by_card.updated) == (0, 1)
    assert count(tenant_session, tenant, Customer) == 3


def test_xlsx_happy_path(hotel, run_import, tenant_session):
    tenant, _owner = hotel
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["客户编号", "姓名", "手机", "生日", "会员卡号"])
    ws.append(["X-1", "张伟", 13700002222, dt.datetime(1975, 3, 4), 10001])
    ws.append(["X-2", "'=HYPERLINK(\"http://evil\")", None, None, None])
    ws.append([None, None, None, None, None])   # a blank row is no row of data
    buf = io.BytesIO()
    wb.save(buf)
    mapping = imports.guess_mapping("customers", ["客户编号", "姓名", "手机", "生日", "会员卡号"])
    result = run_import(tenant, "customers", "k.xlsx", buf.getvalue(), mapping)
    assert (result.created, result.errors, result.total) == (2, [], 2)
    s = tenant_session(tenant)
    zhang = s.scalar(select(Customer).where(Customer.external_ref == "X-1"))
    assert (zhang.phone, zhang.birthday, zhang.card_number) == ("+8613700002222", dt.date(1975, 3, 4), "10001")
    # A formula is kept as plain text (the apostrophe of our own export removed).
    assert s.scalar(select(Customer.name).where(Customer.external_ref == "X-2")) == '=HYPERLINK("http://evil")'


def test_gbk_csv_with_chinese_names(hotel, run_import, tenant_session):
    tenant, _owner = hotel
    rows = [["姓名", "手机", "会员卡号", "备注"], ["王小明", "13812345678", "A001", "喜欢安静的房间"],
            ["李四", "13900001111", "A002", "素食"], ["欧阳娜娜", "13700002222", "A003", ""]]
    content = csv_bytes(rows, "gbk")
    headers, _rows = imports.read_table("会员.csv", content)
    mapping = imports.guess_mapping("customers", headers)
    result = run_import(tenant, "customers", "会员.csv", content, mapping, dedupe_by="card_number")
    assert (result.created, result.errors) == (3, [])
    names = set(tenant_session(tenant).scalars(select(Customer.name)))
    assert names == {"王小明", "李四", "欧阳娜娜"}
    again = run_import(tenant, "customers", "会员.csv", content, mapping, dedupe_by="card_number")
    assert (again.created, again.unchanged) == (0, 3)


def test_customer_errors_name_row_and_column(hotel, run_import, tenant_session):
    tenant, _owner = hotel
    run_import(tenant, "customers", "c.csv", csv_bytes(CUSTOMERS_CSV), CUSTOMER_MAPPING)
    rows = [
        ["ref", "name", "phone", "email", "birthday", "classification", "location", "card_number", "notes"],
        ["N-1", "", "", "", "", "", "", "", ""],                              # 2: name required
        ["N-2", "A" * 121, "", "", "", "", "", "", ""],                       # 3: oversize
        ["N-3", "Bad phone", "12", "", "", "", "", "", ""],                   # 4: phone
        ["N-4", "Bad mail", "", "not-an-email", "", "", "", "", ""],          # 5: email
        ["N-5", "Bad date", "", "", "1980-13-01", "", "", "", ""],            # 6: date
        ["N-6", "Bad class", "", "", "", "gold", "", "", ""],                 # 7: classification
        ["N-7", "Bad location", "", "", "", "", "moon", "", ""],              # 8: location code
        ["N-8", "Taken card", "", "", "", "", "", "VIP-1", ""],               # 9: card of PMS-1
        ["N-9", "First", "", "", "", "", "", "", ""],                         # 10: fine
        ["N-9", "Second", "", "", "", "", "", "", ""],                        # 11: same ref as row 10
        ["N-10", "Notes", "", "", "", "", "", "", "x" * 2001],                 # 12: oversize notes
        ["N-11", "<b>x</b>", "", "", "", "", "", "", ""],                     # 13: markup
    ]
    mapping = {h: h for h in rows[0]}
    mapping["ref"] = "ref"
    result = run_import(tenant, "customers", "bad.csv", csv_bytes(rows), mapping)
    assert errors_at(result) == {(2, "name"), (3, "name"), (4, "phone"), (5, "email"), (6, "birthday"),
                                 (7, "classification"), (8, "location"), (9, "card_number"), (11, "ref"),
                                 (12, "notes"), (13, "name")}
    by_row = {e.row: msgid(e) for e in result.errors}
    assert by_row[2] == "This field is required."
    assert by_row[3] == "At most %(n)s characters."
    assert by_row[8].startswith("Unknown code")
    assert by_row[9] == "This card number already belongs to %(name)s."
    assert by_row[11] == "The same value as in row %(row)s."
    assert not result.written and result.created == 0
    assert count(tenant_session, tenant, Customer) == 3   # nothing written
    # A required field without a column, and a column the file does not have: row 1.
    result = run_import(tenant, "customers", "bad.csv", csv_bytes(rows), {"ref": "ref", "phone": "Handy"})
    assert errors_at(result) == {(1, "Name"), (1, "Handy")}


def test_all_or_nothing_versus_skip_failing(hotel, run_import, tenant_session):
    tenant, _owner = hotel
    rows = [["name", "phone"], ["Good One", "13812345678"], ["", "13900001111"], ["Good Two", ""]]
    refused = run_import(tenant, "customers", "c.csv", csv_bytes(rows), {"name": "name", "phone": "phone"})
    assert (refused.created, refused.written, errors_at(refused)) == (0, False, {(3, "name")})
    assert count(tenant_session, tenant, Customer) == 0
    done = run_import(tenant, "customers", "c.csv", csv_bytes(rows), {"name": "name", "phone": "phone"},
                      skip_failing=True)
    assert (done.created, done.skipped, done.written, errors_at(done)) == (2, 1, True, {(3, "name")})
    assert set(tenant_session(tenant).scalars(select(Customer.name))) == {"Good One", "Good Two"}


# --- transactions ---------------------------------------------------------------------------

def test_transactions_csv_happy_path_and_idempotent_reimport(hotel, run_import, tenant_session):
    tenant, _owner = hotel
    run_import(tenant, "customers", "c.csv", csv_bytes(CUSTOMERS_CSV), CUSTOMER_MAPPING)
    rows = [list(TX_MAPPING.values()),
            ["PMS-1", "2026-03-01", "1280", "2", "stay", "main", "front-office", "F-1", "suite"],
            ["PMS-1", "20260302", "88.50", "", "餐饮", "", "", "", ""],          # kind by its Chinese name
            ["NEW-7", "2026/03/03", "1,234.50", "1", "", "", "", "", ""],      # unknown ref: new customer
            ["NEW-7", "2026-03-03", "10", "1", "", "", "", "", ""],
            ["NEW-7", "2026-03-03", "10", "1", "", "", "", "", ""]]           # the same purchase twice
    s = tenant_session(tenant)
    fnb = s.scalar(select(TransactionKind).where(TransactionKind.code == "food-beverage"))
    fnb_zh = fnb.name_zh
    rows[2][4] = fnb_zh
    content = csv_bytes(rows)
    result = run_import(tenant, "transactions", "t.csv", content, TX_MAPPING, as_of=dt.date(2026, 3, 31))
    assert (result.created, result.errors, result.customers_created) == (5, [], 1)
    s = tenant_session(tenant)
    txs = {(t.occurred_on, t.amount, t.quantity): t for t in s.scalars(select(Transaction))}
    first = txs[(dt.date(2026, 3, 1), Decimal("1280.00"), 2)]
    assert first.external_id == "F-1" and first.note == "suite"
    assert first.location_id == s.scalar(select(Location.id).where(Location.code == "main"))
    assert first.department_id == s.scalar(select(Department.id).where(Department.code == "front-office"))
    assert txs[(dt.date(2026, 3, 2), Decimal("88.50"), 1)].kind_id == fnb.id
    stay = s.scalar(select(TransactionKind.id).where(TransactionKind.code == "stay"))
    assert txs[(dt.date(2026, 3, 3), Decimal("1234.50"), 1)].kind_id == stay   # the default kind
    new = s.scalar(select(Customer).where(Customer.external_ref == "NEW-7"))
    assert new.name == "NEW-7"
    assert count(tenant_session, tenant, Transaction) == 5
    again = run_import(tenant, "transactions", "t.csv", content, TX_MAPPING, as_of=dt.date(2026, 3, 31))
    assert (again.created, again.updated, again.unchanged, again.customers_created) == (0, 0, 5, 0)
    assert count(tenant_session, tenant, Transaction) == 5
    assert count(tenant_session, tenant, Customer) == 4
    # A third identical purchase in a new file is one more transaction.
    rows.append(["NEW-7", "2026-03-03", "10", "1", "", "", "", "", ""])
    third = run_import(tenant, "transactions", "t.csv", csv_bytes(rows), TX_MAPPING)
    assert (third.created, third.unchanged) == (1, 5)
    # The external id finds the transaction a row changes.
    rows[1][2] = "1300"
    fourth = run_import(tenant, "transactions", "t.csv", csv_bytes(rows), TX_MAPPING)
    assert (fourth.created, fourth.updated, fourth.unchanged) == (0, 1, 5)


def test_transaction_errors_name_row_and_column(hotel, run_import, tenant_session):
    tenant, _owner = hotel
    rows = [list(TX_MAPPING.values()),
            ["", "2026-03-01", "10", "1", "", "", "", "", ""],              # 2: ref required
            ["R", "2026-02-30", "10", "1", "", "", "", "", ""],             # 3: bad date
            ["R", "2026-03-01", "ten", "1", "", "", "", "", ""],            # 4: bad amount
            ["R", "2026-03-01", "-5", "1", "", "", "", "", ""],             # 5: negative
            ["R", "2026-03-01", "1.234", "1", "", "", "", "", ""],          # 6: 3 decimals
            ["R", "2026-03-01", "10", "0", "", "", "", "", ""],             # 7: quantity
            ["R", "2026-03-01", "10", "1", "lunch", "", "", "", ""],        # 8: unknown kind
            ["R", "2026-03-01", "10", "1", "", "moon", "", "", ""],         # 9: unknown location
            ["R", "2026-03-01", "10", "1", "", "", "nope", "", ""],         # 10: unknown department
            ["R", "2026-03-01", "10", "1", "", "", "", "E-1", ""],          # 11: fine
            ["R", "2026-03-02", "10", "1", "", "", "", "E-1", ""],          # 12: same external id
            ["R", "2026-03-01", "10", "1", "", "", "", "", "n" * 256],      # 13: oversize note
            ["R", "2027-01-01", "10", "1", "", "", "", "", ""],             # 14: future
            ["R", "", "", "1", "", "", "", "", ""],                         # 15: date and amount required
            ["R", "2026-03-01", "12345678901234", "1", "", "", "", "", ""]]  # 16: too many digits
    result = run_import(tenant, "transactions", "t.csv", csv_bytes(rows), TX_MAPPING, as_of=dt.date(2026, 3, 31))
    assert errors_at(result) == {(2, "customer_ref"), (3, "occurred_on"), (4, "amount"), (5, "amount"),
                                 (6, "amount"), (7, "quantity"), (8, "kind"), (9, "location"), (10, "department"),
                                 (12, "external_id"), (13, "note"), (14, "occurred_on"), (15, "occurred_on"),
                                 (15, "amount"), (16, "amount")}
    by_row = {(e.row, e.column): msgid(e) for e in result.errors}
    assert by_row[(4, "amount")] == "Enter an amount such as 120 or 120.50."
    assert by_row[(5, "amount")] == "The amount cannot be negative."
    assert by_row[(6, "amount")] == "Use at most 2 decimal places."
    assert by_row[(8, "kind")].startswith("Unknown code")
    assert by_row[(12, "external_id")] == "The same value as in row %(row)s."
    assert by_row[(14, "occurred_on")] == "The date cannot be in the future."
    assert count(tenant_session, tenant, Transaction) == 0
    assert count(tenant_session, tenant, Customer) == 0
    skipped = run_import(tenant, "transactions", "t.csv", csv_bytes(rows), TX_MAPPING, skip_failing=True,
                         as_of=dt.date(2026, 3, 31))
    assert (skipped.created, skipped.skipped, skipped.customers_created) == (1, 14, 1)
    missing = run_import(tenant, "transactions", "t.csv", csv_bytes(rows), {"customer_ref": "customer_ref"})
    assert {(e.row, e.column) for e in missing.errors} == {(1, "Date"), (1, "Amount")}


def test_cdnow_sample_imports_end_to_end(make_tenant, run_import, tenant_session):
    path = CDNOW / "cdnow_sample_transactions.csv"
    if not path.exists():
        pytest.skip(f"the CDNOW data is not at {CDNOW} (the shared data folder next to the repository)")
    refs, total, rows = set(), Decimal("0"), 0
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            refs.add(row["customer_ref"])
            total += Decimal(row["amount"])
            rows += 1
    tenant, _owner = make_tenant("other")
    content = path.read_bytes()
    headers, _data = imports.read_table(path.name, content)
    mapping = imports.guess_mapping("transactions", headers)
    assert mapping == {"customer_ref": "customer_ref", "occurred_on": "occurred_on", "quantity": "quantity",
                       "amount": "amount"}
    calls = []
    result = run_import(tenant, "transactions", path.name, content, mapping, progress=lambda d, t: calls.append((d, t)))
    assert (result.created, result.errors, result.customers_created) == (rows, [], len(refs))
    assert calls[-1] == (rows, rows) and len(calls) > 2
    s = tenant_session(tenant)
    assert s.scalar(select(func.count()).select_from(Customer)) == len(refs) == 2357
    assert s.scalar(select(func.count()).select_from(Transaction)) == rows == 6919
    stored = sum((Decimal(a) for a in s.scalars(select(Transaction.amount))), Decimal("0"))
    assert stored == total
    again = run_import(tenant, "transactions", path.name, content, mapping)
    assert (again.created, again.updated, again.unchanged) == (0, 0, rows)


# --- the pages --------------------------------------------------------------------------------

@pytest.fixture
def manager_client(app, hotel, add_member, client):
    tenant, _owner = hotel
    manager = add_member(tenant, "manager")
    login(client, manager.email)
    return client


def upload(client, kind: str, name: str, content: bytes):
    return client.post("/imports", data={"kind": kind, "file": (io.BytesIO(content), name)},
                       content_type="multipart/form-data")


def job_id_of(response) -> uuid.UUID:
    return uuid.UUID(response.headers["Location"].split("/imports/")[1].split("/")[0])


def test_upload_map_preview_run_and_download_errors(app, hotel, manager_client, tenant_session, monkeypatch):
    tenant, _owner = hotel
    monkeypatch.setitem(app.config, "IMPORTS_RUN_INLINE", True)
    c = manager_client
    assert c.get("/imports").status_code == 200
    rows = [["客户编号", "姓名", "手机"], ["A-1", "王伟", "13812345678"], ["A-2", "", "13900001111"],
            ["A-3", "李娜", "12"]]
    r = upload(c, "customers", "会员.csv", csv_bytes(rows, "gbk"))
    assert r.status_code == 303
    job_id = job_id_of(r)
    page = c.get(f"/imports/{job_id}/mapping").text
    assert '<option selected value="姓名">' in page or 'value="姓名" selected' in page
    r = c.post(f"/imports/{job_id}/mapping", data={"ref": "客户编号", "name": "", "phone": "手机"})
    assert r.status_code == 422 and "This field is required." in r.text
    r = c.post(f"/imports/{job_id}/mapping", data={"ref": "客户编号", "name": "姓名", "phone": "手机"})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/imports/{job_id}/preview")
    page = c.get(f"/imports/{job_id}/preview").text
    assert "2 errors in 2 rows." in page and "王伟" in page
    # All or nothing: the run refuses, nothing is written, the errors are listed.
    r = c.post(f"/imports/{job_id}/run", data={"dedupe_by": "external_ref"})
    assert r.status_code == 303 and r.headers["Location"].endswith(f"/imports/{job_id}")
    page = c.get(f"/imports/{job_id}").text
    assert "Nothing was imported." in page and "Not imported" in page
    assert count(tenant_session, tenant, Customer) == 0
    r = c.get(f"/imports/{job_id}/errors.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    lines = list(csv.reader(io.StringIO(r.data.decode("utf-8-sig"))))
    assert lines[0] == ["Row", "Column", "Message"]
    assert lines[1] == ["3", "姓名", "This field is required."]
    assert lines[2][:2] == ["4", "手机"]
    # The same job again, skipping the failing rows.
    r = c.post(f"/imports/{job_id}/run", data={"dedupe_by": "external_ref", "skip_failing": "y"})
    assert r.status_code == 303
    page = c.get(f"/imports/{job_id}").text
    assert "Created: 1" in page and "Skipped (with errors): 2" in page
    assert list(tenant_session(tenant).scalars(select(Customer.name))) == ["王伟"]
    # A finished job does not run twice.
    assert c.post(f"/imports/{job_id}/run", data={"dedupe_by": "external_ref"}).status_code == 303
    assert count(tenant_session, tenant, Customer) == 1
    # The mapping is remembered for the next file of the tenant.
    s = tenant_session(tenant)
    assert s.scalar(select(ImportMapping.mapping).where(ImportMapping.kind == "customers")) == {
        "ref": "客户编号", "name": "姓名", "phone": "手机"}
    r = upload(c, "customers", "next.csv", csv_bytes([["Kundennummer", "姓名", "手机"], ["x", "y", "13812345678"]]))
    job2 = tenant_session(tenant).get(ImportJob, (tenant.id, job_id_of(r)))
    assert job2.options["mapping"] == {"name": "姓名", "phone": "手机"}


def test_upload_refuses_bad_files(manager_client):
    c = manager_client
    r = upload(c, "customers", "x.xls", b"\xd0\xcf\x11\xe0")
    assert r.status_code == 422 and "save the file as .xlsx or CSV" in r.text
    r = upload(c, "customers", "x.csv", b"")
    assert r.status_code == 422
    r = c.post("/imports", data={"kind": "customers"}, content_type="multipart/form-data")
    assert r.status_code == 422 and "Choose a file." in r.text
    r = upload(c, "orders", "x.csv", b"a\n1\n")
    assert r.status_code == 422


def test_background_thread_runs_the_import_and_the_page_polls(app, hotel, manager_client, tenant_session,
                                                              monkeypatch):
    import time

    monkeypatch.setattr(imports, "PROGRESS_EVERY", 50)   # progress reports during the run
    tenant, _owner = hotel
    c = manager_client
    rows = [["customer_ref", "occurred_on", "amount"]] + [[f"C{i % 50}", "2026-01-02", f"{i}.10"]
                                                         for i in range(1, 301)]
    job_id = job_id_of(upload(c, "transactions", "t.csv", csv_bytes(rows)))
    c.post(f"/imports/{job_id}/mapping", data={"customer_ref": "customer_ref", "occurred_on": "occurred_on",
                                                "amount": "amount"})
    r = c.post(f"/imports/{job_id}/run", data={"dedupe_by": "external_id"})
    assert r.status_code == 303
    for _ in range(200):
        r = c.get(f"/imports/{job_id}/progress", headers={"HX-Request": "true"})
        if r.headers.get("HX-Refresh"):
            break
        assert 'hx-trigger="every 1s"' in r.text and "<progress" in r.text
        time.sleep(0.05)
    assert r.headers.get("HX-Refresh") == "true"
    page = c.get(f"/imports/{job_id}").text
    assert "Created: 300" in page and "New customers from unknown references: 50" in page
    assert 'hx-trigger="every 1s"' not in page
    assert count(tenant_session, tenant, Transaction) == 300


def test_progress_partial_of_a_running_job(app, hotel, manager_client):
    tenant, _owner = hotel
    s = app.extensions["huitou_db"].new_session()
    bind_tenant(s, tenant.id)
    job = ImportJob(kind="customers", filename="x.csv", content=b"name\nx\n", status="running", total_rows=10,
                    processed_rows=4)
    s.add(job)
    s.commit()
    s.close()
    r = manager_client.get(f"/imports/{job.id}/progress", headers={"HX-Request": "true"})
    assert r.status_code == 200
    assert 'hx-trigger="every 1s"' in r.text and 'value="40"' in r.text and "4 of 10 rows checked" in r.text


def test_a_crash_mid_import_leaves_no_partial_data(app, hotel, manager_client, tenant_session, monkeypatch):
    tenant, _owner = hotel
    monkeypatch.setitem(app.config, "IMPORTS_RUN_INLINE", True)
    monkeypatch.setattr(imports, "BATCH", 10)
    original = imports._bulk_insert
    calls = []

    def crash_on_second_batch(s, model, rows):
        calls.append(len(rows))
        if len(calls) > 1:
            raise RuntimeError("disk full")
        original(s, model, rows)

    monkeypatch.setattr(imports, "_bulk_insert", crash_on_second_batch)
    rows = [["customer_ref", "occurred_on", "amount"]] + [[f"C{i}", "2026-01-02", "10"] for i in range(30)]
    c = manager_client
    job_id = job_id_of(upload(c, "transactions", "t.csv", csv_bytes(rows)))
    c.post(f"/imports/{job_id}/mapping", data={"customer_ref": "customer_ref", "occurred_on": "occurred_on",
                                                "amount": "amount"})
    c.post(f"/imports/{job_id}/run", data={"dedupe_by": "external_id"})
    assert len(calls) == 2   # the customers went in, the transactions did not
    assert count(tenant_session, tenant, Customer) == 0
    assert count(tenant_session, tenant, Transaction) == 0
    page = c.get(f"/imports/{job_id}").text
    assert "Not imported" in page and "unexpected error" in page
    job = tenant_session(tenant).get(ImportJob, (tenant.id, job_id))
    assert job.status == "failed" and "disk full" in job.options["failure"]


# --- export -------------------------------------------------------------------------------------

@pytest.fixture
def exported(hotel, run_import):
    tenant, _owner = hotel
    run_import(tenant, "customers", "c.csv", csv_bytes(CUSTOMERS_CSV + [
        ["PMS-4", "=cmd|' /C calc'!A0", "@SUM(1)", "", "", "", "", "", "", "-2", "+x", "plain"]]), CUSTOMER_MAPPING)
    rows = [list(TX_MAPPING.values()),
            ["PMS-1", "2026-03-01", "1280", "2", "stay", "main", "front-office", "F-1", "=1+1"],
            ["PMS-2", "2026-03-05", "88.50", "1", "food-beverage", "", "", "", ""],
            ["PMS-2", "2026-04-05", "10", "1", "stay", "", "", "", ""]]
    run_import(tenant, "transactions", "t.csv", csv_bytes(rows), TX_MAPPING)
    return tenant


def read_csv(response) -> list[list[str]]:
    assert response.data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))


def test_customer_export_csv_and_xlsx_escape_formulas(exported, manager_client, monkeypatch):
    monkeypatch.setattr(imports, "EXPORT_CHUNK", 2)   # several chunks (keyset paging)
    c = manager_client
    r = c.post("/customers/export.csv")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    assert "attachment" in r.headers["Content-Disposition"]
    rows = read_csv(r)
    assert rows[0] == list(imports.CUSTOMER_EXPORT_COLUMNS)
    by_ref = {row[0]: dict(zip(rows[0], row)) for row in rows[1:]}
    assert set(by_ref) == {"PMS-1", "PMS-2", "PMS-3", "PMS-4"}
    assert by_ref["PMS-1"]["phone"] == "'+8613812345678"
    assert by_ref["PMS-1"]["location"] == "main" and by_ref["PMS-1"]["birthday"] == "1980-05-06"
    assert by_ref["PMS-4"]["name"] == "'=cmd|' /C calc'!A0"
    assert by_ref["PMS-4"]["address_as"] == "'@SUM(1)"
    assert by_ref["PMS-4"]["company"] == "'-2" and by_ref["PMS-4"]["plate_number"] == "'+x"
    assert by_ref["PMS-2"]["notes"] == "'=1+2"
    assert [row[0] for row in read_csv(c.post("/customers/export.csv", data={"q": "PMS-2"}))[1:]] == ["PMS-2"]
    assert [row[1] for row in read_csv(c.post("/customers/export.csv", data={"q": "王"}))[1:]] == ["王伟"]
    r = c.post("/customers/export.xlsx")
    assert r.status_code == 200
    ws = openpyxl.load_workbook(io.BytesIO(r.data)).active
    values = [[cell.value for cell in row] for row in ws.iter_rows()]
    assert values[0] == list(imports.CUSTOMER_EXPORT_COLUMNS)
    pms4 = next(v for v in values if v[0] == "PMS-4")
    assert pms4[1] == "'=cmd|' /C calc'!A0" and pms4[2] == "'@SUM(1)"
    assert all(ws.cell(row=i, column=2).data_type != "f" for i in range(1, ws.max_row + 1))


def test_export_imports_back_unchanged(exported, manager_client, run_import):
    data = manager_client.post("/customers/export.csv").data
    headers, _rows = imports.read_table("export.csv", data)
    mapping = imports.guess_mapping("customers", headers)
    result = run_import(exported, "customers", "export.csv", data, mapping)
    assert (result.created, result.updated, result.unchanged, result.errors) == (0, 0, 4, [])


def test_transaction_export_with_filters(exported, manager_client, monkeypatch):
    monkeypatch.setattr(imports, "EXPORT_CHUNK", 2)
    c = manager_client
    rows = read_csv(c.post("/transactions/export.csv"))
    assert rows[0] == list(imports.TRANSACTION_EXPORT_COLUMNS)
    assert [r[:8] for r in rows[1:]] == [
        ["PMS-1", "王伟", "2026-03-01", "1280.00", "2", "stay", "main", "front-office"],
        ["PMS-2", "Li Na", "2026-03-05", "88.50", "1", "food-beverage", "", ""],
        ["PMS-2", "Li Na", "2026-04-05", "10.00", "1", "stay", "", ""]]
    assert rows[1][9] == "'=1+1"
    assert len(read_csv(c.post("/transactions/export.csv", data={"from": "2026-03-02", "to": "2026-03-31"}))) == 2
    assert len(read_csv(c.post("/transactions/export.csv", data={"kind": "stay"}))) == 3
    assert len(read_csv(c.post("/transactions/export.csv", data={"location": "main"}))) == 2
    assert len(read_csv(c.post("/transactions/export.csv", data={"q": "PMS-2"}))) == 3
    assert c.post("/transactions/export.csv", data={"from": "yesterday"}).status_code == 422
    assert c.post("/transactions/export.csv", data={"kind": "nope"}).status_code == 422
    r = c.post("/transactions/export.xlsx", data={"kind": "food-beverage"})
    values = [[cell.value for cell in row] for row in openpyxl.load_workbook(io.BytesIO(r.data)).active.iter_rows()]
    assert len(values) == 2 and values[1][:4] == ["PMS-2", "Li Na", dt.datetime(2026, 3, 5), 88.5]


def _export_audits(tenant_session, tenant) -> list[AuditEntry]:
    return list(tenant_session(tenant).scalars(select(AuditEntry).where(AuditEntry.action == "export")
                                               .order_by(AuditEntry.created_at, AuditEntry.id)))


def test_every_list_export_is_recorded_with_filters_and_rows(exported, app, add_member, client, tenant_session):
    manager = add_member(exported, "manager")
    login(client, manager.email)
    read_csv(client.post("/customers/export.csv", data={"q": " PMS-2 "}))
    client.post("/customers/export.xlsx")
    read_csv(client.post("/transactions/export.csv", data={"kind": "stay"}))
    client.post("/transactions/export.xlsx", data={"from": "2026-03-02", "to": "2026-03-31"})
    entries = _export_audits(tenant_session, exported)
    assert [(e.object_type, e.object_id, e.actor_user_id) for e in entries] == [
        ("customers_list", None, manager.id), ("customers_list", None, manager.id),
        ("transactions_list", None, manager.id), ("transactions_list", None, manager.id)]
    assert [e.details for e in entries] == [
        {"format": "csv", "filters": {"q": "PMS-2"}, "rows": 1},
        {"format": "xlsx", "filters": {"q": ""}, "rows": 4},
        {"format": "csv", "filters": {"from": "", "to": "", "kind": "stay", "location": "", "q": ""}, "rows": 2},
        {"format": "xlsx", "filters": {"from": "2026-03-02", "to": "2026-03-31", "kind": "", "location": "",
                                       "q": ""}, "rows": 1},
    ]
    assert all(e.created_at is not None for e in entries)


def test_the_export_log_shows_who_exported_what(exported, app, add_member, client, tenant_session, make_tenant):
    manager = add_member(exported, "manager")
    login(client, manager.email)
    read_csv(client.post("/customers/export.csv", data={"q": " PMS-2 "}))
    client.post("/transactions/export.xlsx", data={"kind": "stay"})
    customer = tenant_session(exported).scalar(select(Customer).where(Customer.external_ref == "PMS-1"))
    assert client.post(f"/customers/{customer.id}/export.json").status_code == 200
    # Another tenant's export is not listed.
    other, other_owner = make_tenant("hotel", name="Other Hotel")
    other_client = app.test_client()
    login(other_client, other_owner.email)
    read_csv(other_client.post("/customers/export.csv", data={"q": "secret-filter"}))

    assert 'href="/imports/exports"' in client.get("/imports").text
    page = client.get("/imports/exports")
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", page.text)
    assert text.count("<tr>") == 4  # the head and three exports
    assert "Customer list · CSV" in text and "Search: PMS-2" in text
    assert "Transaction list · XLSX" in text and "Kind: Stay" in text
    assert f"One customer's data · <a href=\"/customers/{customer.id}\">" in text
    assert manager.name in text and "secret-filter" not in text
    # Newest first.
    assert text.index("One customer's data") < text.index("Transaction list") < text.index("Customer list")

    staff = add_member(exported, "staff")
    staff_client = app.test_client()
    login(staff_client, staff.email)
    assert staff_client.get("/imports/exports").status_code == 403


def test_the_export_log_pages_and_ignores_a_bad_cursor(exported, manager_client, monkeypatch):
    from saas.customers import import_views

    monkeypatch.setattr(import_views, "EXPORT_LOG_ROWS", 2)
    for q in ("a", "b", "c"):
        read_csv(manager_client.post("/customers/export.csv", data={"q": q}))
    first = manager_client.get("/imports/exports").text
    assert "Search: c" in first and "Search: b" in first and "Search: a" not in first
    older = re.search(r'href="(/imports/exports\?before=[^"]+)"', first).group(1)
    second = manager_client.get(older.replace("&amp;", "&")).text
    assert "Search: a" in second and "Search: b" not in second
    assert manager_client.get("/imports/exports?before=yesterday").status_code == 200


def test_refused_or_abandoned_exports(exported, manager_client, tenant_session, monkeypatch):
    monkeypatch.setattr(imports, "EXPORT_CHUNK", 2)
    c = manager_client
    # A GET (a link, a prefetch) exports and records nothing; nor do bad filters.
    assert c.get("/customers/export.csv").status_code == 405
    assert c.get("/transactions/export.xlsx").status_code == 405
    assert c.post("/transactions/export.xlsx", data={"to": "31.3.2026"}).status_code == 422
    assert _export_audits(tenant_session, exported) == []
    # A download abandoned half-way is recorded (who, what, filters) without a row count.
    r = c.post("/transactions/export.csv", buffered=False)
    assert r.status_code == 200
    next(iter(r.response))
    r.close()
    entry, = _export_audits(tenant_session, exported)
    assert entry.details == {"format": "csv", "filters": {"from": "", "to": "", "kind": "", "location": "", "q": ""},
                             "rows": None}


def test_export_buttons_work_with_the_csrf_token(exported, app, add_member, client, tenant_session, monkeypatch):
    manager = add_member(exported, "manager", language="zh_CN")
    login(client, manager.email)
    monkeypatch.setitem(app.config, "WTF_CSRF_ENABLED", True)
    page = client.get("/imports").text
    assert 'method="post" action="/customers/export.csv"' in page
    assert 'method="post" action="/transactions/export.csv"' in page
    assert client.post("/customers/export.csv", data={"q": ""}).status_code == 400
    token = csrf_from(page)
    assert len(read_csv(client.post("/customers/export.csv", data={"q": "", "csrf_token": token}))) == 5
    r = client.post("/transactions/export.xlsx", data={"kind": "stay", "csrf_token": token})
    assert r.status_code == 200 and r.data[:2] == b"PK"
    assert [e.details["rows"] for e in _export_audits(tenant_session, exported)] == [4, 2]


# --- access ---------------------------------------------------------------------------------------

IMPORT_ROUTES = [("GET", "/imports/{id}/mapping"), ("POST", "/imports/{id}/mapping"),
                 ("GET", "/imports/{id}/preview"), ("POST", "/imports/{id}/run"), ("GET", "/imports/{id}"),
                 ("GET", "/imports/{id}/progress"), ("GET", "/imports/{id}/errors.csv")]
ALL_ROUTES = IMPORT_ROUTES + [("GET", "/imports"), ("POST", "/imports"), ("POST", "/customers/export.csv"),
                              ("POST", "/customers/export.xlsx"), ("POST", "/transactions/export.csv"),
                              ("POST", "/transactions/export.xlsx")]


def test_another_tenants_job_is_not_found(app, make_tenant, client, tenant_session):
    tenant_a, owner_a = make_tenant("hotel")
    _tenant_b, owner_b = make_tenant("bank")
    s = app.extensions["huitou_db"].new_session()
    bind_tenant(s, tenant_a.id)
    job = ImportJob(kind="customers", filename="a.csv", content=b"name\nx\n", options={"headers": ["name"],
                    "mapping": {"name": "name"}}, total_rows=1)
    s.add(job)
    s.commit()
    s.close()
    login(client, owner_b.email)
    for method, url in IMPORT_ROUTES:
        r = client.open(url.format(id=job.id), method=method, data={"dedupe_by": "external_ref", "name": "name"})
        assert r.status_code == 404, (method, url)
    assert tenant_session(tenant_a).get(ImportJob, (tenant_a.id, job.id)).status == "uploaded"
    login(client, owner_a.email)
    assert client.get(f"/imports/{job.id}/mapping").status_code == 200


def test_staff_may_not_import_or_export(hotel, add_member, client):
    tenant, _owner = hotel
    staff = add_member(tenant, "staff")
    login(client, staff.email)
    for method, url in ALL_ROUTES:
        r = client.open(url.format(id=uuid.uuid4()), method=method, data={})
        assert r.status_code == 403, (method, url)


def test_jobs_tick_fails_imports_interrupted_by_a_restart(app, make_tenant):
    """An import still "running" a day after it started lost its thread: the daily tick
    marks it failed (once), so it can be run again; a recent one is left alone."""
    from saas.customers.models import ImportJob
    from saas.db import bind_tenant

    tenant, _owner = make_tenant()
    s = app.extensions["huitou_db"].new_session()
    bind_tenant(s, tenant.id)
    s.add_all([
        ImportJob(kind="customers", filename="old.csv", content=b"x", status="running",
                  created_at=dt.datetime(2026, 11, 21, 9, tzinfo=dt.timezone.utc)),
        ImportJob(kind="customers", filename="new.csv", content=b"x", status="running",
                  created_at=dt.datetime(2026, 11, 22, 23, tzinfo=dt.timezone.utc)),
    ])
    s.commit()
    s.close()
    runner = app.test_cli_runner()
    first = runner.invoke(args=["jobs", "tick", "--as-of", "2026-11-23"])
    assert first.exit_code == 0 and "1 interrupted imports marked failed" in first.output
    second = runner.invoke(args=["jobs", "tick", "--as-of", "2026-11-23"])
    assert "interrupted imports" not in second.output
    s = app.extensions["huitou_db"].new_session(read_only=True)
    bind_tenant(s, tenant.id)
    assert dict(s.execute(select(ImportJob.filename, ImportJob.status)).all()) == {
        "old.csv": "failed", "new.csv": "running"}
    s.close()
