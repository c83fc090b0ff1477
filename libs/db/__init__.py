"""Database access shared by every service: pool, migrations, embedded PostgreSQL."""
