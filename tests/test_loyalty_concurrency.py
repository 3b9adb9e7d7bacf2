"""Real parallel requests against gunicorn on loopback (4 workers x 4 threads) serving the
test's own database (the SQLite file, then PostgreSQL with row-level security): one
Idempotency-Key sent 100 times at once credits once; the same key with another body is
409; 300 distinct awards at once credit exactly 300 x their points, with no 5xx and no
"database is locked"; 20 redemptions of the full balance at once: exactly one succeeds;
two voids (and two reversals) of the same thing at once: one succeeds.

Runs in the xdist group of the browser tests, so that the servers of the two never share
the machine's two cores at the same time.
"""
from __future__ import annotations

import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.award import Http, app_spec, gunicorn_server, server_overrides
from saas import clock
from saas.customers.models import Customer, IdempotencyRecord, Transaction
from saas.loyalty import ledger
from saas.loyalty.models import LedgerEntry, LoyaltyAccount
from saas.settings import services as settings_services
from saas.settings.models import ProgrammeSection

pytestmark = pytest.mark.xdist_group("browser")

ARTIFACTS = Path(__file__).resolve().parent / "e2e" / "artifacts"
# One tier, no multipliers: every award of 100.00 earns exactly 10 points.
PROGRAMME = {"points_per_currency_unit": "0.1", "min_redeem_points": 0, "point_value": "0.01",
             "tiers": [{"code": "member", "name_zh": "会员", "name_en": "Member", "threshold": 0}]}


@pytest.fixture(scope="module")
def server(app, tmp_path_factory):
    """(base URL, log path) of gunicorn serving the app's database."""
    log = tmp_path_factory.mktemp("gunicorn") / "server.log"
    spec = app_spec(server_overrides(app.config["DATABASE_URL"]))
    try:
        with gunicorn_server(spec, log, workers=4, threads=4, probe="/api/v1/openapi.json") as base:
            yield base, log
    finally:
        if log.exists():
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / f"concurrency-{app.config['DB_KIND']}-server.log").write_text(log.read_text(errors="replace"))


@pytest.fixture
def shop(app, server, make_tenant):
    """A hotel with the one-tier programme, an API key and customers C-1 .. C-11; yields
    (tenant, key, http) and checks afterwards that the server logged no error."""
    base, log = server
    start = log.stat().st_size
    tenant, _owner = make_tenant("hotel")
    s = app.extensions["huitou_db"].new_session(tenant_id=tenant.id)
    try:
        row = s.scalar(select(ProgrammeSection).where(ProgrammeSection.section == "loyalty"))
        row.data = PROGRAMME
        row.updated_at = clock.now_utc()
        _k, key = settings_services.create_api_key(s, "PMS", None)
        s.add_all([Customer(name=f"客户{i}", external_ref=f"C-{i}") for i in range(1, 12)])
        s.commit()
    finally:
        s.close()
    http = Http(base, timeout=120)
    yield tenant, key, http
    http.close()  # this thread's connection (the others close their own)
    with open(log, errors="replace") as fh:
        fh.seek(start)
        new = fh.read()
    assert "database is locked" not in new.lower()
    assert "Traceback" not in new, new[-3000:]


def fire(requests: list[tuple[str, dict, dict]], http: Http) -> list[tuple]:
    """Send every (path, body, headers) at the same moment, one thread each, each on its
    own connection; returns (status, headers, body) in order."""
    barrier = threading.Barrier(len(requests))
    out: list = [None] * len(requests)

    def run(i, path, body, headers):
        barrier.wait()
        try:
            out[i] = http.request("POST", path, body, headers)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions
            out[i] = ("exception", {}, repr(exc))
        finally:
            http.close()

    threads = [threading.Thread(target=run, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    return out


def headers(key: str, idem: str | None = None) -> dict:
    h = {"Authorization": f"Bearer {key}"}
    h["Idempotency-Key"] = idem or uuid.uuid4().hex
    return h


def tx(ref: str = "C-1", amount: str = "100.00") -> dict:
    return {"customer_ref": ref, "occurred_on": clock.today("Asia/Shanghai").isoformat(), "amount": amount}


def no_server_errors(results) -> None:
    statuses = Counter(r[0] for r in results)
    assert all(isinstance(st, int) and st < 500 for st in statuses), statuses
    assert not any("database is locked" in str(r[2]).lower() for r in results)


def book(app, tenant, fn):
    s = app.extensions["huitou_db"].new_session(read_only=True, tenant_id=tenant.id)
    try:
        return fn(s)
    finally:
        s.close()


def count(app, tenant, model, *where) -> int:
    return book(app, tenant, lambda s: s.scalar(select(func.count()).select_from(model).where(*where)))


def balance(app, tenant, ref: str = "C-1") -> tuple[int, int]:
    """(cached balance, sum of the ledger) of a customer."""
    def fn(s):
        cid = s.scalar(select(Customer.id).where(Customer.external_ref == ref))
        cached = s.scalar(select(LoyaltyAccount.balance).where(LoyaltyAccount.customer_id == cid))
        return cached, ledger.ledger_sum(s, cid)
    return book(app, tenant, fn)


def post(http, path, body, hdrs):
    status, _h, payload = http.request("POST", path, body, hdrs)
    assert status < 300, payload
    return payload


# --- one key, many requests --------------------------------------------------------------------

def test_100_requests_with_one_key_record_and_credit_once(app, shop):
    tenant, key, http = shop
    results = fire([("/api/v1/transactions", tx(), headers(key, "one-key"))] * 100, http)
    no_server_errors(results)
    assert Counter(r[0] for r in results) == {201: 100}
    replayed = [r for r in results if r[1].get("idempotent-replayed") == "true"]
    assert len(replayed) == 99
    assert len({str(r[2]) for r in results}) == 1
    assert results[0][2]["points_awarded"] == 10 and results[0][2]["balance"] == 10
    assert count(app, tenant, Transaction) == 1
    assert count(app, tenant, LedgerEntry) == count(app, tenant, LedgerEntry, LedgerEntry.kind == "earn") == 1
    assert count(app, tenant, IdempotencyRecord) == 1
    assert balance(app, tenant) == (10, 10)

    # (b) The same key with another body: 409, nothing recorded.
    status, _h, body = http.request("POST", "/api/v1/transactions", tx(amount="200.00"), headers(key, "one-key"))
    assert status == 409 and body["error"]["code"] == "idempotency_key_reused"
    assert count(app, tenant, Transaction) == 1 and balance(app, tenant) == (10, 10)


def test_one_key_with_two_bodies_at_once_records_one_and_refuses_the_other(app, shop):
    tenant, key, http = shop
    a, b = tx(amount="100.00"), tx(amount="300.00")
    results = fire([("/api/v1/transactions", body, headers(key, "mixed")) for body in [a, b] * 10], http)
    no_server_errors(results)
    by_body = {amount: Counter(r[0] for r, body in zip(results, [a, b] * 10, strict=True)
                               if body["amount"] == amount) for amount in ("100.00", "300.00")}
    # Whichever body came first was recorded; every request with the other body is 409.
    winner = next(amount for amount, c in by_body.items() if 201 in c)
    loser = "300.00" if winner == "100.00" else "100.00"
    assert by_body[winner] == {201: 10} and by_body[loser] == {409: 10}, by_body
    assert count(app, tenant, Transaction) == 1
    expected = 10 if winner == "100.00" else 30
    assert balance(app, tenant) == (expected, expected)


# --- many awards at once -------------------------------------------------------------------------

def test_300_distinct_awards_at_once_credit_exactly(app, shop):
    tenant, key, http = shop
    # 200 to one customer (all contending for the same account), 100 over ten others.
    refs = ["C-1"] * 200 + [f"C-{2 + i % 10}" for i in range(100)]
    results = fire([("/api/v1/transactions", tx(ref), headers(key)) for ref in refs], http)
    no_server_errors(results)
    assert Counter(r[0] for r in results) == {201: 300}, [r[2] for r in results if r[0] != 201][:3]
    assert all(r[2]["points_awarded"] == 10 for r in results)
    assert count(app, tenant, Transaction) == 300
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "earn") == 300
    assert balance(app, tenant, "C-1") == (2000, 2000)
    for i in range(2, 12):
        assert balance(app, tenant, f"C-{i}") == (100, 100)
    # The balances answered to C-1's awards are 10, 20, ... 2000, each once.
    assert sorted(r[2]["balance"] for r, ref in zip(results, refs, strict=True) if ref == "C-1") == \
        list(range(10, 2001, 10))
    assert book(app, tenant, ledger.verify) == []


def test_20_redemptions_of_the_full_balance_at_once_one_succeeds(app, shop):
    tenant, key, http = shop
    post(http, "/api/v1/transactions", tx(amount="10000.00"), headers(key))
    assert balance(app, tenant) == (1000, 1000)
    results = fire([("/api/v1/redemptions", {"customer_ref": "C-1", "points": 1000}, headers(key))
                    for _ in range(20)], http)
    no_server_errors(results)
    assert Counter(r[0] for r in results) == {201: 1, 422: 19}
    assert {r[2]["error"]["code"] for r in results if r[0] == 422} == {"insufficient_points"}
    (won,) = [r[2] for r in results if r[0] == 201]
    assert (won["points"], won["balance"], won["redeemable"]) == (1000, 0, 0)
    assert balance(app, tenant) == (0, 0)
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "redeem") == 1
    assert book(app, tenant, ledger.verify) == []


def test_two_voids_of_the_same_redemption_at_once_one_succeeds(app, shop):
    tenant, key, http = shop
    post(http, "/api/v1/transactions", tx(amount="10000.00"), headers(key))
    ids = [post(http, "/api/v1/redemptions", {"customer_ref": "C-1", "points": 100}, headers(key))["id"]
           for _ in range(5)]
    assert balance(app, tenant) == (500, 500)
    results = fire([(f"/api/v1/redemptions/{rid}/void", {}, headers(key)) for rid in ids for _ in range(2)], http)
    no_server_errors(results)
    for i, _rid in enumerate(ids):
        pair = results[2 * i: 2 * i + 2]
        assert sorted(r[0] for r in pair) == [200, 422], pair
        assert [r[2]["error"]["code"] for r in pair if r[0] == 422] == ["already_voided"]
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "void") == 5
    assert balance(app, tenant) == (1000, 1000)
    assert book(app, tenant, ledger.verify) == []


def test_two_reversals_of_the_same_transaction_at_once_one_succeeds(app, shop):
    tenant, key, http = shop
    ids = [post(http, "/api/v1/transactions", tx(), headers(key))["id"] for _ in range(5)]
    results = fire([(f"/api/v1/transactions/{tid}/reverse", {"reason": "refund"}, headers(key))
                    for tid in ids for _ in range(2)], http)
    no_server_errors(results)
    for i in range(len(ids)):
        pair = results[2 * i: 2 * i + 2]
        assert sorted(r[0] for r in pair) == [200, 422], pair
        assert [r[2]["error"]["code"] for r in pair if r[0] == 422] == ["already_reversed"]
    assert count(app, tenant, LedgerEntry, LedgerEntry.kind == "reverse") == 5
    assert balance(app, tenant) == (0, 0)
    assert book(app, tenant, lambda s: {t.reversed_on for t in s.scalars(select(Transaction))}) == {
        clock.today(tenant.timezone)}
