-- Every event the processor takes from events.raw, once.
--
-- Partitioned by day on `time` (pg_partman, migration 0002), distributed by tenant_id where
-- Citus is on, so a tenant's query is routed to one shard.
--
-- `time` is the CloudEvent's `time`, or, when the event has none, the timestamp of its Kafka
-- record (set once by the API's producer when it accepted the event). It is never the time
-- the processor happens to see the record: both sources are part of the record, so a
-- redelivered record yields the same `time`.
--
-- Idempotence. The design asks for idempotence on (tenant_id, id). A unique constraint on a
-- partitioned table must contain the partition key, so the key is (tenant_id, time, id).
-- Because `time` is stable across redeliveries (above), a redelivered event carries the same
-- (tenant_id, time, id), lands in the same partition and is dropped by the processor's
-- INSERT ... ON CONFLICT (tenant_id, time, id) DO NOTHING: at-least-once delivery from Kafka
-- gives exactly one row per event. What this key does not merge: two different records with
-- the same tenant and id but different times, i.e. a client that resends an event without
-- `time` (each send gets its own ingest time) or reuses an id for another event. Clients that
-- retry should set `time`. The columns are in the order (tenant_id, time, id) so that the
-- same index serves the query API's "a tenant's events, newest first" (ORDER BY time DESC,
-- id DESC) and appends at the end of each tenant's range as time advances.
CREATE TABLE public.events (
    tenant_id       text        NOT NULL,
    id              text        NOT NULL,
    source          text        NOT NULL,
    type            text        NOT NULL,
    subject         text,
    time            timestamptz NOT NULL,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    specversion     text        NOT NULL DEFAULT '1.0',
    datacontenttype text,
    dataschema      text,
    -- The JSON payload; SQL NULL when the event has none, JSON null when it sent `null`.
    data            jsonb,
    -- A binary payload, base64 as in the JSON event format; never together with `data`.
    data_base64     text,
    -- Every other attribute (CloudEvents extensions), untrusted, as sent.
    extensions      jsonb       NOT NULL DEFAULT '{}',
    -- Where the event was read from, for tracing a row back to its Kafka record.
    kafka_partition integer,
    kafka_offset    bigint,
    CONSTRAINT events_pkey PRIMARY KEY (tenant_id, time, id),
    CONSTRAINT events_one_payload CHECK (data IS NULL OR data_base64 IS NULL),
    CONSTRAINT events_extensions_object CHECK (jsonb_typeof(extensions) = 'object')
) PARTITION BY RANGE (time);

COMMENT ON TABLE public.events IS
    'CloudEvents by tenant; one row per (tenant_id, time, id), see migration 0001_events.sql';

-- Time-range scans across tenants (maintenance, replay): tiny, and time correlates with the
-- physical order because rows arrive roughly in time order.
CREATE INDEX events_time_brin ON public.events USING brin (time);
-- The query API filtered by type.
CREATE INDEX events_tenant_type_time ON public.events (tenant_id, type, time);
-- A subject's history (event sourcing); events without a subject stay out of it.
CREATE INDEX events_tenant_subject_time ON public.events (tenant_id, subject, time)
    WHERE subject IS NOT NULL;

-- Before any partition exists, so Citus distributes the partitions pg_partman creates later.
-- A no-op without Citus (see sluice_infra/citus_sql.py).
SELECT sluice.distribute_table('public.events', 'tenant_id');
