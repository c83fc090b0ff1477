"""Run JitSignalService alone: python -m services.jit_signal"""

from app.service_main import main
from services.jit_signal.server import SPEC

if __name__ == "__main__":
    main(SPEC)
