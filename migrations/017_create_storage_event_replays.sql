-- 017: replay store of signed storage events (IngestStoredFile).
--
-- A signed event (services/ingest/events.py) is accepted within 300 s of its signed_at; its
-- event_id is recorded here with the SHA-256 of what was signed. The same event again is
-- answered as before (idempotent); the same event_id with other content is refused. Rows
-- older than the skew window are no longer needed (a replayed old event fails the clock
-- check) and are deleted by ingest as it records new ones.
--
-- Runs inside the single transaction opened by the migration runner.

CREATE TABLE storage_event_replays (
    event_id        TEXT PRIMARY KEY CHECK (length(event_id) BETWEEN 1 AND 512),
    request_sha256  TEXT NOT NULL CHECK (request_sha256 ~ '^[0-9a-f]{64}$'),
    received_at     TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
CREATE INDEX idx_storage_event_replays_received ON storage_event_replays (received_at);
COMMENT ON TABLE storage_event_replays IS
    'Signed storage events seen in the clock-skew window (replay detection of IngestStoredFile).';

GRANT SELECT, INSERT, DELETE ON storage_event_replays TO ghostly_ingest;
