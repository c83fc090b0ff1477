-- 020: a claimed session carries a lease (issue 16: crash recovery).
--
-- An upload or storage event claims its session as 'processing' before the analysis runs. The
-- claiming ingest process is recorded as the lease owner (claimed_by: host, pid and a random
-- instance id) and renews claim_heartbeat_at while it works. When an ingest process dies
-- (kill -9, OOM, node loss) its leases stop being renewed; any ingest process that finds a
-- 'processing' session whose heartbeat is older than the lease period takes the lease over
-- (one UPDATE ... WHERE heartbeat is stale, so exactly one process wins) and processes the
-- session from its stored C3D with the settings recorded at claim time.
--
-- claim_request keeps the request's session metadata (the serialized
-- ghostly.ingest.v1.SessionMetadata) until the session is completed or failed, so that the
-- process taking over analyses with the same options, outcome values and BFR data.
-- Sessions claimed before this migration have no heartbeat: their created_at stands in.
--
-- ingest_pending_files: an upload commits its C3D to the content store before it claims the
-- session. A row here records the paths the upload may have written (its name, or the
-- content-named alternative) until the claim's transaction removes it; a row older than the
-- sweep grace period whose paths hold no session belongs to an upload whose process died in
-- between: ingest deletes those store files (only if they still hold the same bytes) and
-- the row. Files the storage side puts in the store itself are never swept.
--
-- ghostly_ingest already holds UPDATE on therapy_sessions (010).
-- Runs inside the single transaction opened by the migration runner.

ALTER TABLE therapy_sessions
    ADD COLUMN claimed_by TEXT CHECK (length(claimed_by) <= 200),
    ADD COLUMN claim_heartbeat_at TIMESTAMP WITH TIME ZONE,
    ADD COLUMN claim_request BYTEA CHECK (octet_length(claim_request) <= 1048576);

CREATE INDEX idx_therapy_sessions_processing_lease
    ON therapy_sessions ((COALESCE(claim_heartbeat_at, created_at)))
    WHERE processing_status = 'processing';

COMMENT ON COLUMN therapy_sessions.claimed_by IS
    'Ingest process holding the processing lease (host:pid:instance); NULL when not claimed.';
COMMENT ON COLUMN therapy_sessions.claim_heartbeat_at IS
    'Last renewal of the processing lease; a processing session with a stale heartbeat is recovered.';

CREATE TABLE ingest_pending_files (
    file_hash   TEXT PRIMARY KEY CHECK (file_hash ~ '^[0-9a-f]{64}$'),
    file_paths  TEXT[] NOT NULL CHECK (cardinality(file_paths) BETWEEN 1 AND 4),
    created_at  TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
CREATE INDEX idx_ingest_pending_files_created ON ingest_pending_files (created_at);
COMMENT ON TABLE ingest_pending_files IS
    'Uploads between their content-store commit and their claim (orphan-file sweep of ingest).';

GRANT SELECT, INSERT, UPDATE, DELETE ON ingest_pending_files TO ghostly_ingest;
