-- 009: what the ingest write path needs beyond the plan's seven tables (issue 4).
--
-- * therapy_sessions.error_message: a bad C3D leaves its session row with status 'failed'
--   and the reason, and no statistics.
-- * therapy_sessions.game_metadata: the game's INFO/SUBJECTS values read from the C3D (game
--   name, level, score, player, device time) so nothing in the file is lost and the legacy
--   compatibility view can rebuild c3d_metadata.game_metadata.
-- * UNIQUE file_hash: ingest is idempotent by content; the same bytes uploaded twice (even
--   concurrently, even under another name) must give ONE session. The legacy migration
--   de-duplicates the "same hash under two paths" quirk the same way.
-- * emg_statistics: which side the channel was analysed as, the standard amplitude and
--   spectral descriptors on the filtered signal (legacy analytics_data carried them), and the
--   analysis details (ISEK parameters, quality evidence) that explain the numbers.
-- * emg_contractions: the contraction list of each channel (plot markers, exports, legacy
--   analytics_data.contractions). Rebuilt with its emg_statistics row.

ALTER TABLE therapy_sessions
    ADD COLUMN error_message TEXT,
    ADD COLUMN game_metadata JSONB;

DROP INDEX idx_therapy_sessions_file_hash;
ALTER TABLE therapy_sessions
    ADD CONSTRAINT therapy_sessions_file_hash_key UNIQUE (file_hash);

ALTER TABLE emg_statistics
    ADD COLUMN side TEXT CHECK (side IN ('left', 'right')),
    ADD COLUMN rms_value FLOAT,              -- V, RMS of the filtered signal
    ADD COLUMN mav_value FLOAT,              -- V, mean absolute value of the filtered signal
    ADD COLUMN mean_frequency_hz FLOAT,      -- Hz, mean power frequency (Welch PSD)
    ADD COLUMN median_frequency_hz FLOAT,    -- Hz, median power frequency (Welch PSD)
    ADD COLUMN fatigue_index FLOAT,          -- definition in analysis_details.descriptors
    ADD COLUMN analysis_details JSONB;       -- parameters used, quality evidence, warnings

CREATE TABLE emg_contractions (
    id                 UUID DEFAULT gen_random_uuid() PRIMARY KEY,
    statistics_id      UUID NOT NULL REFERENCES emg_statistics(id) ON DELETE CASCADE,
    session_id         UUID NOT NULL REFERENCES therapy_sessions(id) ON DELETE CASCADE,
    channel_name       TEXT NOT NULL,
    contraction_index  INTEGER NOT NULL CHECK (contraction_index >= 0),
    start_time_s       FLOAT NOT NULL CHECK (start_time_s >= 0),
    end_time_s         FLOAT NOT NULL,
    duration_s         FLOAT NOT NULL CHECK (duration_s >= 0),
    peak_amplitude     FLOAT NOT NULL,       -- V, envelope
    mean_amplitude     FLOAT NOT NULL,       -- V, envelope
    meets_intensity    BOOLEAN NOT NULL,
    meets_duration     BOOLEAN NOT NULL,
    is_good            BOOLEAN NOT NULL,
    CONSTRAINT emg_contractions_order CHECK (end_time_s >= start_time_s),
    CONSTRAINT emg_contractions_statistics_index_key UNIQUE (statistics_id, contraction_index)
);

-- Markers of a session's channels (JIT plots, exports).
CREATE INDEX idx_emg_contractions_session ON emg_contractions (session_id, channel_name, contraction_index);
