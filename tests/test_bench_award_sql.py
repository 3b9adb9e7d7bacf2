"""bench/award_sql.py: a replayed award writes new ids and keys wherever the recorded ones occur."""
import uuid

from bench.award_sql import GroupCommit, fresh_values, renamed, split_writes


def _award():
    tx, entry = uuid.uuid4().hex, uuid.uuid4().hex
    tenant, customer = uuid.uuid4().hex, uuid.uuid4().hex
    return tx, entry, tenant, customer, [
        ["BEGIN IMMEDIATE", []],
        ['INSERT INTO transactions (tenant_id, id, customer_id, amount) VALUES (?, ?, ?, ?)',
         [tenant, tx, customer, "128.00"]],
        ['INSERT INTO loyalty_entries (tenant_id, id, customer_id, "key", transaction_id) VALUES (?, ?, ?, ?, ?)',
         [tenant, entry, customer, f"earn:{uuid.UUID(hex=tx)}", tx]],
        ["UPDATE loyalty_accounts SET balance=(balance + ?) WHERE tenant_id = ? AND customer_id = ?",
         [12, tenant, customer]],
        ['INSERT INTO idempotency_records (tenant_id, id, "key", response) VALUES (?, ?, ?, ?)',
         [tenant, "rec-1", "bench-key-7", f'{{"id": "{uuid.UUID(hex=tx)}"}}']],
        ["COMMIT", []],
    ]


def test_fresh_values_are_the_ids_and_keys_the_inserts_wrote():
    tx, entry, tenant, customer, award = _award()
    fresh = fresh_values(award)
    assert fresh[:2] == [tx, entry]
    assert "bench-key-7" in fresh and "rec-1" in fresh
    assert tenant not in fresh and customer not in fresh  # existing rows: kept as recorded


def test_renamed_replaces_every_occurrence_in_both_forms_and_nothing_else():
    tx, entry, tenant, customer, award = _award()
    first = renamed(award, fresh_values(award))
    second = renamed(award, fresh_values(award))
    new_tx = first[1][1][1]
    assert new_tx != tx and new_tx != second[1][1][1]
    assert first[2][1][4] == new_tx  # the entry points at the new transaction
    assert first[2][1][3] == f"earn:{uuid.UUID(hex=new_tx)}"  # dashed form inside a key
    assert first[4][1][3] == f'{{"id": "{uuid.UUID(hex=new_tx)}"}}'  # inside the stored answer
    assert first[4][1][2] != "bench-key-7"
    assert first[3][1] == [12, tenant, customer]  # the balance move of the same customer
    assert [sql for sql, _ in first] == [sql for sql, _ in award]
    assert all(tx not in str(params) and entry not in str(params) for _sql, params in first)


def test_split_writes_takes_the_write_transaction_without_its_ends():
    _tx, _entry, _tenant, _customer, award = _award()
    award = [["BEGIN DEFERRED", []], ["SELECT 1", []], ["COMMIT", []]] + award
    reads, writes = split_writes(award)
    assert [sql for sql, _p in reads] == ["BEGIN DEFERRED", "SELECT 1", "COMMIT"]
    assert writes == award[4:-1] and writes[0][0].startswith("INSERT INTO transactions")


def test_group_commit_writes_each_request_in_its_own_savepoint(tmp_path):
    import sqlite3
    import threading

    db = tmp_path / "g.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.commit()
    group = GroupCommit(str(db))
    errors = {}

    def write(i):
        second = None if i == 7 else f"w{i}"  # NOT NULL: only this request's second insert fails
        try:
            group.write([["INSERT INTO t (id, v) VALUES (?, ?)", [i, f"v{i}"]],  # undone with it
                         ["INSERT INTO t (id, v) VALUES (?, ?)", [1000 + i, second]]])
        except sqlite3.IntegrityError as exc:
            errors[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = {r[0] for r in conn.execute("SELECT id FROM t")}
    conn.close()
    assert list(errors) == [7]
    assert rows == {i for i in range(20) if i != 7} | {1000 + i for i in range(20) if i != 7}
    assert group.items == 20 and 1 <= group.batches <= 20
