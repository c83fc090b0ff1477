"""Imported by the analysis fork server at its start (forkserver preload): the fork server is
killed with the ingest process that started it, even by SIGKILL (kill -9, OOM killer), and
its workers with it (worker.py gives them the same signal towards the fork server)."""

from libs.process import die_with_parent

die_with_parent()
