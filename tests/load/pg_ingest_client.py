"""The client of bench_pg_ingest.py, run on the database host as postgres (python3 - on ssh's
standard input): ingests the same events three ways into partitioned tables of a throwaway
schema and prints the figures as JSON. Arguments: port, events, batch size, event size."""

import datetime as dt
import io
import json
import sys
import time
import uuid

import psycopg2
from psycopg2.extras import execute_values

port, events, batch, size = (int(a) for a in sys.argv[1:5])
schema = "sluice_bench_" + uuid.uuid4().hex[:8]
db = psycopg2.connect(host="/var/run/postgresql", port=port, dbname="sluice", user="postgres")
cur = db.cursor()
cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'")
version = cur.fetchone()[0]
native = ", p_type => 'native'" if version.startswith("4.") else ""
COLUMNS = "(tenant_id, id, source, type, subject, time, payload)"


def table(name):
    cur.execute(f"""
        CREATE TABLE {schema}.{name} (
            tenant_id text NOT NULL, id text NOT NULL, source text NOT NULL, type text NOT NULL,
            subject text, time timestamptz NOT NULL, payload jsonb NOT NULL,
            PRIMARY KEY (tenant_id, id, time)
        ) PARTITION BY RANGE (time);
        CREATE INDEX ON {schema}.{name} USING brin (time);
        CREATE INDEX ON {schema}.{name} (tenant_id, type, time);
        SELECT partman.create_parent(p_parent_table => '{schema}.{name}', p_control => 'time'
            {native}, p_interval => '1 day', p_premake => 2);""")
    db.commit()


def rows(run, now):
    filler = "x" * max(0, size - 260)
    for n in range(events):
        payload = json.dumps(
            {
                "order": n,
                "amount": n % 977,
                "currency": "EUR",
                "customer": f"c-{n % 5000}",
                "note": filler,
            }
        )
        yield (
            f"tenant-{n % 20}",
            f"{run}-{n}",
            "/bench/loadgen",
            "com.example.order.created",
            f"order-{n}",
            now - dt.timedelta(seconds=n % 3600),
            payload,
        )


def copy_text(batch_rows):
    out = io.StringIO()
    for r in batch_rows:
        out.write(
            "\t".join(
                str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n") for v in r
            )
            + "\n"
        )
    out.seek(0)
    return out


def batches(it):
    chunk = []
    for r in it:
        chunk.append(r)
        if len(chunk) == batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def copy_direct(name, chunk):
    cur.copy_expert(f"COPY {schema}.{name} {COLUMNS} FROM STDIN", copy_text(chunk))


def copy_staged(name, chunk):
    cur.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS staging (LIKE {schema}.{name}) ON COMMIT DELETE ROWS"
    )
    cur.copy_expert(f"COPY staging {COLUMNS} FROM STDIN", copy_text(chunk))
    cur.execute(f"INSERT INTO {schema}.{name} SELECT * FROM staging ON CONFLICT DO NOTHING")


def insert_values(name, chunk):
    execute_values(
        cur,
        f"INSERT INTO {schema}.{name} {COLUMNS} VALUES %s ON CONFLICT DO NOTHING",
        chunk,
        page_size=len(chunk),
    )


cur.execute(f"CREATE SCHEMA {schema}")
db.commit()
results = {}
try:
    for method, write in (
        ("copy", copy_direct),
        ("copy_staged_on_conflict", copy_staged),
        ("insert_values_on_conflict", insert_values),
    ):
        table(method)
        base = dt.datetime.now(dt.UTC)
        started = time.perf_counter()
        for chunk in batches(rows(method, base)):
            write(method, chunk)
            db.commit()
        seconds = time.perf_counter() - started
        cur.execute(
            f"SELECT count(*), pg_total_relation_size('{schema}.{method}'), "
            "(SELECT avg(pg_column_size(t.*))::int "
            f"FROM (SELECT * FROM {schema}.{method} LIMIT 1000) t) "
            f"FROM {schema}.{method}"
        )
        count, _, row_bytes = cur.fetchone()
        cur.execute(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)::bigint FROM pg_inherits "
            f"WHERE inhparent = '{schema}.{method}'::regclass"
        )
        results[method] = {
            "rows": count,
            "seconds": seconds,
            "rate": count / seconds,
            "row_bytes": row_bytes,
            "table_bytes": cur.fetchone()[0],
        }
        replay = next(batches(rows(method, base)))
        insert_values(method, replay)  # a redelivered batch: nothing new
        db.commit()
        cur.execute(f"SELECT count(*) FROM {schema}.{method}")
        results[method]["after_redelivery"] = cur.fetchone()[0]
finally:
    db.rollback()
    cur.execute(f"DELETE FROM partman.part_config WHERE parent_table LIKE '{schema}.%'")
    cur.execute(f"DROP SCHEMA {schema} CASCADE")
    cur.execute(
        "DROP TABLE IF EXISTS "
        + ", ".join(
            f"partman.template_{schema}_{m}"
            for m in ("copy", "copy_staged_on_conflict", "insert_values_on_conflict")
        )
    )
    db.commit()
cur.execute("SHOW server_version")
print(json.dumps({"results": results, "server": cur.fetchone()[0], "partman": version}))
