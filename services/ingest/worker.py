"""CPU-bound analysis off the event loop, in worker processes (both cores usable for a batch).

Workers are started from a clean fork server (forking a process that runs gRPC threads is
unsafe) with the EMG core preloaded, and warmed up at service start so the first upload does
not pay the import cost.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from libs.emg import AnalysisSettings, SessionAnalysis, analyze_file
from libs.process import die_with_parent


@dataclass
class AnalysisOutcome:
    analysis: SessionAnalysis | None
    error: str | None  # user-facing reason when the file cannot be analysed
    elapsed_ms: int


def _analyze(path: str, settings: AnalysisSettings, file_name: str | None) -> AnalysisOutcome:
    from libs.emg import EmgError

    t0 = time.perf_counter()
    try:
        result = analyze_file(path, settings, file_name=file_name)
        return AnalysisOutcome(result, None, int((time.perf_counter() - t0) * 1000))
    except EmgError as exc:
        return AnalysisOutcome(None, str(exc), int((time.perf_counter() - t0) * 1000))


def _warm() -> int:
    import libs.emg.pipeline  # noqa: F401 - imports numpy/scipy once per worker

    return os.getpid()


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the service shuts its workers down itself (a
    # worker interrupted mid-wait would only print a KeyboardInterrupt traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker's parent is the fork server, which dies with the service (forkserver_guard):
    # no analysis outlives a killed ingest process.
    die_with_parent()


class AnalysisPool:
    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1
        self._executor: ProcessPoolExecutor | None = None

    def _new_executor(self) -> ProcessPoolExecutor:
        # One process per core already: BLAS thread pools inside each worker only oversubscribe
        # the cores (measured: two workers ran 2.5x slower each). The fork server, and so every
        # worker, inherits this environment when it starts.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["services.ingest.forkserver_guard", "libs.emg"])
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker)

    async def start(self) -> None:
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _warm) for _ in range(self.workers)))

    async def analyze(self, path: str, settings: AnalysisSettings, file_name: str | None) -> AnalysisOutcome:
        if self._executor is None:
            await self.start()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, _analyze, path, settings, file_name)
        except BrokenProcessPool:
            # A worker died (e.g. killed for memory): replace the pool once and retry.
            assert self._executor is not None  # started above
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            return await loop.run_in_executor(self._executor, _analyze, path, settings, file_name)

    async def close(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, True, cancel_futures=True)
