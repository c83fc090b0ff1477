"""Legacy -> statistics-first data migration (issue 8).

Modules:
  mapping   pure functions: legacy JSON / row -> new rows (the reference mapping, unit tested;
            the set-based SQL in `migrate` implements the same rules and is checked against it)
  migrate   `ghostly migrate-legacy`: batched, idempotent, resumable, validated
  fixtures  deterministic legacy data generator (tests, benchmark)
  cli       argparse registration of `migrate-legacy`
"""
