-- 022: Reprocess work items shared by every ingest replica (issue 19: distributed reprocessing).
--
-- A Reprocess call enqueues one item per session (batch_id = the call) and streams the
-- progress of its items as they finish; every ingest replica consumes items with
-- `FOR UPDATE SKIP LOCKED` (one replica per item), renews the lease (heartbeat_at) of the items
-- it runs, and an item whose lease went stale (its replica died) is taken again by another,
-- at most `max attempts` times. queue names the content store the replicas share (an item is
-- only meaningful to replicas that can read the session's C3D). Finished items are deleted
-- by ingest a day later. request: the serialized ghostly.ingest.v1.ReprocessRequest (options
-- and flags; the scope is resolved into the items).
--
-- Runs inside the single transaction opened by the migration runner.

CREATE TABLE reprocess_items (
    id             BIGSERIAL PRIMARY KEY,
    batch_id       UUID NOT NULL,
    queue          TEXT NOT NULL CHECK (length(queue) BETWEEN 1 AND 64),
    session_id     UUID NOT NULL REFERENCES therapy_sessions(id) ON DELETE CASCADE,
    request        BYTEA NOT NULL CHECK (octet_length(request) <= 65536),
    status         TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'done', 'failed')),
    claimed_by     TEXT CHECK (length(claimed_by) <= 200),
    heartbeat_at   TIMESTAMP WITH TIME ZONE,
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error_message  TEXT,
    created_at     TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    finished_at    TIMESTAMP WITH TIME ZONE
);
CREATE INDEX idx_reprocess_items_batch ON reprocess_items (batch_id, finished_at);
CREATE INDEX idx_reprocess_items_open ON reprocess_items (queue, id) WHERE status IN ('queued', 'running');
CREATE INDEX idx_reprocess_items_finished ON reprocess_items (finished_at) WHERE finished_at IS NOT NULL;
COMMENT ON TABLE reprocess_items IS
    'Reprocess work items consumed by every ingest replica (SKIP LOCKED queue with leases).';

GRANT SELECT, INSERT, UPDATE, DELETE ON reprocess_items TO ghostly_ingest;
GRANT USAGE ON SEQUENCE reprocess_items_id_seq TO ghostly_ingest;
