"""Typed errors of the EMG analysis core.

Callers (ingest, JIT streaming, export, CLI) map these to user-facing responses, so every
message is plain English and says what is wrong with the input, not where the code failed.
"""


class EmgError(Exception):
    """Base class of every error raised deliberately by ``libs.emg`` about its input."""


class C3DFormatError(EmgError):
    """The bytes are not a readable C3D file (not a C3D, truncated, inconsistent header and
    parameters, unsupported layout)."""


class C3DContentError(EmgError):
    """The file is a valid C3D but its content cannot be analysed (no analog channels,
    zero samples, NaN/Inf values, unusable sampling rate)."""


class SettingsError(EmgError):
    """Analysis settings are invalid (weights not summing to 1, bad thresholds, ...)."""


class MemoryBudgetExceeded(Exception):
    """Analysing the file would need more memory than the configured budget
    (``libs.emg.c3d_reader.check_analysis_budget``).

    Deliberately NOT an EmgError (nor a format error): the file is not at fault, the server's
    limit is, so services map it to RESOURCE_EXHAUSTED rather than INVALID_ARGUMENT, and code
    that catches EmgError as "bad input" does not swallow it. ``needed_bytes`` and
    ``budget_bytes`` carry the figures.
    """

    def __init__(self, needed_bytes: int, budget_bytes: int, what: str = "analysing this C3D file"):
        self.needed_bytes, self.budget_bytes = int(needed_bytes), int(budget_bytes)
        super().__init__(
            f"{what[:1].upper()}{what[1:]} needs about {self.needed_bytes / 2**20:.0f} MiB of memory, "
            f"above the server's budget of {self.budget_bytes / 2**20:.0f} MiB per analysis "
            "(GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB)."
        )
