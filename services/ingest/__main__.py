"""Run IngestService alone: python -m services.ingest"""

from app.service_main import main
from services.ingest.server import SPEC

if __name__ == "__main__":
    main(SPEC)
