"""Operator client commands of the `ghostly` CLI (patients, therapists, sessions, outcome).

Every module here keeps its top level free of grpc, the generated protos and the EMG stack:
`register()` only builds argparse parsers, and the `run_*` functions import what they call.
That keeps `ghostly --help` and the client commands' start-up short (tests/cli/test_cli_startup.py).
"""
