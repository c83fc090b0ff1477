"""The tests run on the event loop GHOSTLY_TEST_LOOP selects (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os


async def test_the_tests_run_on_the_selected_loop():
    loop = asyncio.get_running_loop()
    if os.environ.get("GHOSTLY_TEST_LOOP") == "uvloop":
        import uvloop

        assert isinstance(loop, uvloop.Loop)
    else:
        assert type(loop).__module__.startswith("asyncio")
