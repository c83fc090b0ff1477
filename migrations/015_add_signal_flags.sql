-- 015: machine-readable signal flags per channel and masked contractions (EMG core: libs/emg/flags.py).
--
-- * emg_statistics.signal_flags: the channel's flags, a closed vocabulary (libs/emg/flags.py
--   SIGNAL_FLAGS, in that order); the CHECK refuses any other string, so a reader can rely on
--   the list. '{}' = no flag raised.
--     mains_interference  power-line hum (50/60 Hz and harmonics) found and notched out
--     saturation          raw signal at the ADC rail; those spans are artefacts
--     dropout             constant-value fills (data loss); those spans are artefacts
--     weak_signal         activity too weak to tell contractions from noise (not scored)
--     no_usable_emg       flat, disconnected or hum-only channel (not scored)
--     partially_masked    at least one contraction overlapped an artefact
-- * emg_statistics.usable: false = the channel is excluded from symmetry and the overall score
--   (weak_signal / no_usable_emg); the patient is never scored 0 for it.
-- * emg_contractions.partially_masked / masked_s: the contraction overlapped an artefact and
--   only its uncorrupted part was kept; masked_s = seconds of the burst lost (0 otherwise).
--
-- Rows written before this migration (and rows of the legacy data migration) get the defaults
-- '{}' / true / false / 0: "no flag recorded", not "checked clean"; Reprocess fills them.
-- Constant defaults: no table rewrite; the two CHECKs scan the existing rows once.
-- Grants (010) and row-level security (012) are per table and cover the new columns; the 007
-- compatibility views list their columns explicitly and keep the legacy shape (unchanged).
--
-- Runs inside the single transaction opened by the migration runner.

ALTER TABLE emg_statistics
    ADD COLUMN signal_flags TEXT[] NOT NULL DEFAULT '{}'
        CONSTRAINT emg_statistics_signal_flags_known CHECK (signal_flags <@ ARRAY[
            'mains_interference', 'saturation', 'dropout', 'weak_signal', 'no_usable_emg',
            'partially_masked']::text[]),
    ADD COLUMN usable BOOLEAN NOT NULL DEFAULT true;

ALTER TABLE emg_contractions
    ADD COLUMN partially_masked BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN masked_s FLOAT NOT NULL DEFAULT 0
        CONSTRAINT emg_contractions_masked_s_nonnegative CHECK (masked_s >= 0);

COMMENT ON COLUMN emg_statistics.signal_flags IS
    'Signal flags of the channel (closed vocabulary of libs/emg/flags.py, in its order); empty = none.';
COMMENT ON COLUMN emg_statistics.usable IS
    'false = excluded from symmetry and the overall score (weak_signal / no_usable_emg).';
COMMENT ON COLUMN emg_contractions.partially_masked IS
    'The contraction overlapped an artefact: only its uncorrupted part was kept.';
COMMENT ON COLUMN emg_contractions.masked_s IS
    'Seconds of the burst lost to artefacts (0 when not partially masked).';
