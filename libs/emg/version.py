"""Version of the analysis algorithm.

Stored with every result (emg_statistics.processing_version) so cached statistics can be
invalidated: bump it whenever any number produced for the same input and settings changes.
"""

PROCESSING_VERSION = "2.0.0"
