"""Foreign errors (libs/errors.py FOREIGN / register) map like the domain error they stand for,
without the server bootstrap importing the library that raises them."""

import subprocess
import sys

import grpc

from libs import errors
from libs.grpc_server.interceptor import status_for


def test_emg_errors_map_without_the_interceptor_importing_the_emg_core():
    code = (
        "import sys, libs.grpc_server.interceptor; "
        "sys.exit(1 if any(m.startswith('libs.emg') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
    from libs.emg.errors import C3DFormatError, MemoryBudgetExceeded, SettingsError

    assert status_for(C3DFormatError("not a C3D file")) == (grpc.StatusCode.INVALID_ARGUMENT, "not a C3D file")
    assert status_for(SettingsError("bad weights"))[0] is grpc.StatusCode.INVALID_ARGUMENT
    code_, message = status_for(MemoryBudgetExceeded(2**30, 2**20))
    assert code_ is grpc.StatusCode.RESOURCE_EXHAUSTED and "MiB" in message


def test_registered_error_maps_like_its_kind():
    class Busy(Exception):
        pass

    assert status_for(Busy("x"))[0] is grpc.StatusCode.INTERNAL
    errors.register(Busy, errors.Unavailable)
    try:
        # A domain Unavailable keeps its own message (not "database unavailable: ...").
        assert status_for(Busy("try later")) == (grpc.StatusCode.UNAVAILABLE, "try later")
    finally:
        errors._registered.remove((Busy, errors.Unavailable))
