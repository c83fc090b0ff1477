"""The .proto files are the product's API: generated code must be current, packages versioned,
and every message field, enum value and RPC documented."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from app import protogen

SERVICES = {
    "ghostly.ingest.v1": {
        "IngestService": {
            "Upload",
            "IngestStoredFile",
            "Reprocess",
            "GetProcessingStatus",
            "RecordSessionOutcome",
            "SetScoringConfig",
        },
        "PatientService": {
            "CreateTherapist",
            "CreatePatient",
            "UpdatePatient",
            "DeactivatePatient",
            "SetPatientCalibration",
            "CalibrateFromSession",
        },
    },
    "ghostly.statistics.v1": {
        "StatisticsService": {
            "GetSession",
            "ListSessions",
            "GetEmgStatistics",
            "GetPerformanceScore",
            "GetBfrMonitoring",
            "GetSessionSettings",
            "GetPatientProgress",
            "GetCohortSummary",
            "BatchGetSessionStatistics",
            "GetPatient",
            "ListPatients",
            "ListPatientCalibrations",
            "GetScoringConfig",
        }
    },
    "ghostly.jit_signal.v1": {"JitSignalService": {"StreamSignals", "ListChannels"}},
    "ghostly.export.v1": {"ExportService": {"CreateExport", "ListExportHistory"}},
}


def test_generated_code_is_current(tmp_path):
    written = protogen.generate(tmp_path)
    assert written, "no proto files found"
    for generated in written:
        committed = protogen.PROTO_ROOT / generated.relative_to(tmp_path)
        assert committed.exists(), f"{committed} missing: run python -m app.protogen"
        assert filecmp.cmp(generated, committed, shallow=False), (
            f"{committed} is stale: run python -m app.protogen and commit"
        )


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory) -> descriptor_pb2.FileDescriptorSet:
    import grpc_tools  # type: ignore[import-untyped]  # grpcio-tools ships no type information

    out = tmp_path_factory.mktemp("desc") / "all.pb"
    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(protogen.PROTO_ROOT)) for p in protogen.proto_files()]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{protogen.PROTO_ROOT}",
            f"-I{include}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *files,
        ],
        check=True,
    )
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return fds


def test_services_and_versions(descriptor_set):
    found = {}
    for f in descriptor_set.file:
        assert f.package.startswith("ghostly.") and f.package.endswith(".v1"), f.name
        for svc in f.service:
            found.setdefault(f.package, {})[svc.name] = {m.name for m in svc.method}
    assert found == SERVICES


def _documented(fds):
    """Yield (what, has_comment) for every RPC, message field and enum value."""
    for f in fds.file:
        comments = {
            tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip()
            for loc in f.source_code_info.location
        }

        def msg(path, m, prefix, comments=comments):
            for i, field in enumerate(m.field):
                yield f"{prefix}.{m.name}.{field.name}", bool(comments.get((*path, 2, i)))
            for i, nested in enumerate(m.nested_type):
                if not nested.options.map_entry:
                    yield from msg((*path, 3, i), nested, f"{prefix}.{m.name}")

        for i, m in enumerate(f.message_type):
            yield f"{f.package}.{m.name}", bool(comments.get((4, i)))
            yield from msg((4, i), m, f.package)
        for i, e in enumerate(f.enum_type):
            for j, v in enumerate(e.value):
                yield f"{f.package}.{e.name}.{v.name}", bool(comments.get((5, i, 2, j))) or v.number == 0
        for i, s in enumerate(f.service):
            yield f"{f.package}.{s.name}", bool(comments.get((6, i)))
            for j, m in enumerate(s.method):
                yield f"{f.package}.{s.name}.{m.name}", bool(comments.get((6, i, 2, j)))


def test_every_element_is_documented(descriptor_set):
    missing = [name for name, ok in _documented(descriptor_set) if not ok]
    assert not missing, f"{len(missing)} undocumented proto elements, e.g. {missing[:15]}"
