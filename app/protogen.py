"""Generate the Python gRPC code from protos/ with grpcio-tools' bundled protoc.

The generated files are committed next to their .proto sources so that a plain install
needs no build step; `tests/test_protos.py` regenerates into a temp dir and fails when the
committed files are stale.  Run: python -m app.protogen
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent.parent / "protos"


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(root.rglob("*.proto"))


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    """Compile every .proto under protos/ into out_dir; return the files written."""
    import grpc_tools  # type: ignore[import-untyped]  # grpcio-tools ships no type information
    from grpc_tools import protoc

    include = str(Path(grpc_tools.__file__).parent / "_proto")  # google/protobuf/*.proto
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *files,
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    written = []
    # Make every generated folder a regular package (import ghostly.ingest.v1 ...).
    for f in files:
        d = (out_dir / f).parent
        while d != out_dir:
            init = d / "__init__.py"
            if not init.exists():
                init.write_text("")
            d = d.parent
    for f in files:
        stem = (out_dir / f).with_suffix("")
        written += [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]
    return written


if __name__ == "__main__":
    for p in generate():
        print(p.relative_to(PROTO_ROOT.parent) if p.is_relative_to(PROTO_ROOT.parent) else p)
    sys.exit(0)
