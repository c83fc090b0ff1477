"""Typed errors of the EMG analysis core.

Callers (ingest, JIT streaming, export, CLI) map these to user-facing responses, so every
message is plain English and says what is wrong with the input, not where the code failed.
"""


class EmgError(Exception):
    """Base class of every error raised deliberately by ``libs.emg``."""


class C3DFormatError(EmgError):
    """The bytes are not a readable C3D file (not a C3D, truncated, unsupported layout)."""


class C3DContentError(EmgError):
    """The file is a valid C3D but its content cannot be analysed (no analog channels,
    zero samples, NaN/Inf values, unusable sampling rate)."""


class SettingsError(EmgError):
    """Analysis settings are invalid (weights not summing to 1, bad thresholds, ...)."""
