"""The installed package, not the checkout (issue 15): the wheel used to ship no migrations, and
the installed `ghostly migrate` printed "applied 0 migration(s)" on an empty database and exited 0.

The wheel is built from exactly what the Dockerfile's build stage copies, installed into a fresh
venv (no project source on sys.path: the runtime dependencies come from this venv's
site-packages, added by a .pth line, which does not run the editable install's finder) and run
from a directory outside the checkout against a new empty database. The tests that build and
install are marked `packaging` (deselect with -m 'not packaging'); no network is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from libs.db.migrate import MigrationError, default_directory, discover, migrate

ROOT = Path(__file__).resolve().parent.parent
REPO_MIGRATIONS = ROOT / "migrations"
DOCKERFILE = ROOT / "Dockerfile"
# Tables every full schema has (the comparison below is with everything the repo's files create).
KEY_TABLES = {
    "schema_migrations",
    "therapists",
    "researcher_profiles",
    "patients",
    "c3d_metadata",
    "analysis_results",
    "therapy_sessions",
    "emg_statistics",
    "emg_contractions",
    "performance_scores",
    "bfr_monitoring",
    "session_settings",
    "export_history",
    "signal_processing_cache",
    "legacy_c3d_sources",
    "cohort_day_scores",
    "patient_calibrations",
    "session_outcomes",
    "scoring_config",
}


# --- Dockerfile -------------------------------------------------------------------------------


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split by FROM."""
    lines, buf = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        buf += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(buf)
            buf = ""
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def _context_copies(stage: list[str]) -> list[tuple[str, str]]:
    """(source, destination) of each COPY from the build context (not --from=) in a stage."""
    copies = []
    for line in stage:
        words = shlex.split(line)
        if words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        *sources, dest = args
        for src in sources:
            into_dir = dest.endswith("/") or len(sources) > 1
            copies.append((src, f"{dest.rstrip('/')}/{Path(src).name}" if into_dir else dest))
    return copies


def test_dockerfile_installs_the_built_wheel():
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: build the wheel, then install it"
    build, runtime = stages[0], stages[-1]
    assert " AS build" in build[0], build[0]
    assert any(line.startswith("RUN ") and "pip wheel" in line for line in build)
    text = "\n".join(runtime)
    assert "COPY --from=build" in text
    assert any(line.startswith("RUN ") and "pip install" in line and ".whl" in line for line in runtime)
    assert " -e " not in text and "--editable" not in text and "pip install ." not in text
    assert _context_copies(runtime) == [], "the runtime stage holds no source tree"
    copied = {src for src, _ in _context_copies(build)}
    assert {"pyproject.toml", "protos", "libs", "services", "migrations"} <= copied


# --- checkout layout and the runner's refusal -------------------------------------------------


def test_checkout_has_one_copy_of_each_migration():
    """libs/db/migrations (the package resource) is a link to migrations/, not a second copy."""
    link = ROOT / "libs" / "db" / "migrations"
    assert link.is_symlink() and os.readlink(link) == "../../migrations"
    assert Path(str(default_directory())).resolve() == REPO_MIGRATIONS.resolve()
    assert [m.path.name for m in discover()] == sorted(p.name for p in REPO_MIGRATIONS.glob("*.sql"))


async def test_no_migration_files_is_an_error_naming_the_place(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("no SQL here")
    with pytest.raises(
        MigrationError, match=rf"no migration files .* found in {re.escape(str(empty))} \(it has no \.sql file\)"
    ):
        discover(empty)
    missing = tmp_path / "missing"
    with pytest.raises(MigrationError, match=rf"found in {re.escape(str(missing))} \(it does not exist\)"):
        discover(missing)
    # Refused before any connection is attempted (nothing listens on port 1).
    with pytest.raises(MigrationError, match="no migration files"):
        await migrate("postgresql://127.0.0.1:1/none", directory=empty)


# --- the wheel and a fresh venv ---------------------------------------------------------------


@dataclass(frozen=True)
class Venv:
    root: Path
    python: Path
    ghostly: Path
    site_packages: Path


def _run(*cmd, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV")
    }
    env.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built offline from what the Dockerfile's build stage copies."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    for source, dest in _context_copies(_stages()[0]):
        target = src / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / source).is_dir():
            shutil.copytree(
                ROOT / source,
                target,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
        else:
            shutil.copy2(ROOT / source, target)
    out = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "-q",
        "-w",
        base / "dist",
        src,
        cwd=base,
        env=_clean_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (whl,) = (base / "dist").glob("*.whl")
    return whl


def _install(whl: Path, root: Path) -> Venv:
    """A fresh venv with the wheel alone installed, the dependencies seen through a .pth line."""
    out = _run(sys.executable, "-m", "venv", "--without-pip", root, cwd=root.parent)
    assert out.returncode == 0, out.stderr
    python = root / "bin" / "python"
    out = _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        "--no-index",
        "-q",
        whl,
        cwd=root.parent,
        env=_clean_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    site = Path(
        _run(
            python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root.parent, env=_clean_env()
        ).stdout.strip()
    )
    assert site.is_relative_to(root), site
    # The runtime dependencies (grpcio, asyncpg, ...). Appended after the venv's own
    # site-packages, and .pth files in that directory are not processed (so the editable
    # install's finder, which would map `libs` back to the checkout, never runs).
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_test_runtime_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    return Venv(root, python, root / "bin" / "ghostly", site)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Venv:
    return _install(wheel, tmp_path_factory.mktemp("venv") / "venv")


@pytest.fixture
def outside(tmp_path) -> Path:
    """A working directory outside the checkout."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    assert not d.resolve().is_relative_to(ROOT)
    return d


@pytest.mark.packaging
def test_wheel_ships_every_migration_and_the_generated_protos(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for sql in sorted(REPO_MIGRATIONS.glob("*.sql")):
            member = f"libs/db/migrations/{sql.name}"
            assert member in names, member
            assert zf.read(member) == sql.read_bytes(), f"{member} differs from {sql} (checksums would too)"
        shipped = {n for n in names if n.startswith("libs/db/migrations/")}
        assert len(shipped) == len(list(REPO_MIGRATIONS.glob("*.sql")))
        protos = sorted((ROOT / "protos").rglob("*.proto"))
        assert len(protos) >= 5
        for proto in protos:
            rel = proto.relative_to(ROOT / "protos").with_suffix("")
            for suffix in ("_pb2.py", "_pb2_grpc.py"):
                assert f"{rel}{suffix}" in names, f"{rel}{suffix}"
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "ghostly = app.cli:main" in entry_points
    assert not any(n.startswith(("migrations/", "tests/", "protos/")) for n in names)


async def _schema(dsn: str) -> dict[str, list]:
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        )
        indexes = await conn.fetch(
            "SELECT schemaname, tablename, indexname FROM pg_indexes "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3"
        )
        applied = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
    finally:
        await conn.close()
    return {
        "tables": [tuple(r) for r in tables],
        "indexes": [tuple(r) for r in indexes],
        "applied": [tuple(r) for r in applied],
    }


@pytest.mark.packaging
async def test_installed_ghostly_migrate_builds_the_full_schema(installed, db_factory, outside):
    # The installed code, not the checkout, is what runs.
    probe = await asyncio.to_thread(
        _run,
        installed.python,
        "-c",
        "import json, sys, app.cli, services, ghostly.ingest.v1.ingest_pb2 as pb, libs.db.migrate as m\n"
        "print(json.dumps({'modules': [app.cli.__file__, services.__file__, pb.__file__],"
        " 'migrations': str(m.default_directory()), 'path': sys.path,"
        " 'finders': [type(f).__module__ + '.' + type(f).__qualname__ for f in sys.meta_path]}))",
        cwd=outside,
        env=_clean_env(),
    )
    assert probe.returncode == 0, probe.stderr
    seen = json.loads(probe.stdout)
    for module in seen["modules"]:
        assert Path(module).is_relative_to(installed.site_packages), module
    assert Path(seen["migrations"]) == installed.site_packages / "libs" / "db" / "migrations"
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    source_entries = [p for p in seen["path"] if p and p not in deps and Path(p).resolve().is_relative_to(ROOT)]
    assert source_entries == [], source_entries
    assert not any("editable" in f for f in seen["finders"]), seen["finders"]

    expected_versions = [m.version for m in discover(REPO_MIGRATIONS) if not m.manual]
    dsn = await db_factory.create("pkg")
    env = _clean_env(DATABASE_URL=dsn)
    out = await asyncio.to_thread(_run, installed.ghostly, "migrate", cwd=outside, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(f"applied {len(expected_versions)} migration(s)"), out.stdout

    # The same schema as the checkout's runner and files give a fresh database.
    reference = await db_factory.create("pkgref")
    await migrate(reference, directory=REPO_MIGRATIONS)
    got, want = await _schema(dsn), await _schema(reference)
    assert [v for v, _, _ in got["applied"]] == expected_versions
    assert got == want
    tables = {name for schema, name, kind in got["tables"] if schema == "public" and kind == "BASE TABLE"}
    assert tables >= KEY_TABLES, KEY_TABLES - tables

    # Up to date now: "0 applied" is the truth, and --status lists every file as applied.
    again = await asyncio.to_thread(_run, installed.ghostly, "migrate", cwd=outside, env=env)
    assert (again.returncode, again.stdout.strip()) == (0, "applied 0 migration(s)"), again.stderr
    listed = await asyncio.to_thread(_run, installed.ghostly, "migrate", "--status", cwd=outside, env=env)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == len(list(REPO_MIGRATIONS.glob("*.sql")))


@pytest.mark.packaging
async def test_installed_without_migrations_refuses_to_report_success(wheel, tmp_path, db_factory, outside):
    """The issue's failure: a package without its SQL files must not say "applied 0"."""
    broken = await asyncio.to_thread(_install, wheel, tmp_path / "venv")
    shipped = broken.site_packages / "libs" / "db" / "migrations"
    assert len(list(shipped.glob("*.sql"))) == len(list(REPO_MIGRATIONS.glob("*.sql")))
    shutil.rmtree(shipped)
    env = _clean_env(DATABASE_URL=await db_factory.create("pkgempty"))
    for args in (["migrate"], ["migrate", "--status"]):
        out = await asyncio.to_thread(_run, broken.ghostly, *args, cwd=outside, env=env)
        assert out.returncode != 0, (args, out.stdout)
        assert "applied" not in out.stdout
        assert "no migration files" in out.stderr and str(shipped) in out.stderr, out.stderr
