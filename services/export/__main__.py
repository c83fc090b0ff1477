"""Run ExportService alone: python -m services.export"""

from app.service_main import main
from services.export.server import SPEC

if __name__ == "__main__":
    main(SPEC)
