"""Run StatisticsService alone: python -m services.statistics"""

from app.service_main import main
from services.statistics.server import SPEC

if __name__ == "__main__":
    main(SPEC)
