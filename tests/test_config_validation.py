"""Configuration is validated at load (libs/config.py): every value that is not allowed is
refused with the variable's name, its value and what is allowed, all of them together; the
entry points print that and exit 2 without a traceback."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from libs import config as config_mod
from libs.config import ConfigError
from tests.helpers import ROOT


def refused(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_mod.load(env)
    assert isinstance(info.value, ValueError)
    return info.value.problems


def test_documented_defaults_still_load():
    cfg = config_mod.load({})
    assert cfg.ports == {"ingest": 50051, "statistics": 50052, "jit_signal": 50053, "export": 50054}
    assert cfg.metrics_ports == {"ingest": 9101, "statistics": 9102, "jit_signal": 9103, "export": 9104}
    assert (cfg.host, cfg.database_url, cfg.statistics_database_url, cfg.targets) == ("127.0.0.1", None, None, {})
    assert cfg.store_dir == cfg.data_dir / "c3d-store" and cfg.cache_dir == cfg.data_dir / "signal-cache"
    assert (cfg.cache_max_bytes, cfg.max_message_bytes, cfg.max_upload_bytes) == (1 << 30, 4 << 20, 256 << 20)
    assert (cfg.db_pool_min, cfg.db_pool_max, cfg.health_interval_s, cfg.shutdown_grace_s) == (1, 10, 2.0, 10.0)
    assert (cfg.log_level, cfg.event_loop, cfg.device_timezone, cfg.ingest_workers) == ("INFO", "uvloop", "UTC", 0)
    assert (cfg.auth.mode, cfg.auth.algorithm, cfg.auth.issuer, cfg.auth.audience) == (
        "jwt",
        "HS256",
        "ghostly",
        "ghostly-backend",
    )


def test_unset_empty_or_blank_values_are_the_defaults():
    blank = {
        var: value
        for var, value in [
            ("GHOSTLY_DB_POOL_MAX", ""),
            ("GHOSTLY_AUTH_MODE", "  "),
            ("GHOSTLY_INGEST_PORT", ""),
            ("DATABASE_URL", ""),
        ]
    }
    assert config_mod.load(blank) == config_mod.load({})


def test_every_documented_variable_accepts_a_good_value(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n")
    good = {
        "DATABASE_URL": "postgresql://ghostly:pw@db.internal:5432/ghostly",
        "STATISTICS_DATABASE_URL": "postgres://ghostly_statistics@replica/ghostly?sslmode=require",
        "GHOSTLY_DATA_DIR": str(tmp_path / "data"),
        "GHOSTLY_STORE_DIR": str(tmp_path / "store"),
        "GHOSTLY_CACHE_DIR": str(tmp_path),
        "GHOSTLY_CACHE_MAX_BYTES": "0",
        "GHOSTLY_PGDATA": str(tmp_path / "pg"),
        "GHOSTLY_PG_PORT": "55433",
        "GHOSTLY_PG_BIN": str(tmp_path),
        "GHOSTLY_HOST": "0.0.0.0",
        "GHOSTLY_INGEST_PORT": "1",
        "GHOSTLY_STATISTICS_PORT": "65535",
        "GHOSTLY_JIT_SIGNAL_PORT": " 50063 ",
        "GHOSTLY_EXPORT_PORT": "50064",
        "GHOSTLY_INGEST_METRICS_PORT": "0",
        "GHOSTLY_STATISTICS_METRICS_PORT": "65535",
        "GHOSTLY_JIT_SIGNAL_METRICS_PORT": "9203",
        "GHOSTLY_EXPORT_METRICS_PORT": "9204",
        "GHOSTLY_STATISTICS_ADDRESS": "statistics:50052",
        "GHOSTLY_JIT_SIGNAL_ADDRESS": "dns:///jit:50053",
        "GHOSTLY_INGEST_ADDRESS": "[::1]:50051",
        "GHOSTLY_EXPORT_ADDRESS": "unix:/run/ghostly/export.sock",
        "GHOSTLY_MAX_MESSAGE_BYTES": "65536",
        "GHOSTLY_MAX_UPLOAD_BYTES": "1",
        "GHOSTLY_EVENT_SECRET": "s3cret",
        "GHOSTLY_STORE_URL": "s3://ghostly-c3d/site-a",
        "GHOSTLY_EVENTS_URL": "nats://nats-1:4222,nats://nats-2:4222",
        "GHOSTLY_EVENTS_STREAM": "BUCKET_EVENTS",
        "GHOSTLY_EVENTS_SUBJECT": "minio.ghostly",
        "GHOSTLY_EVENTS_CONSUMER": "ingest",
        "GHOSTLY_EVENTS_MAX_DELIVER": "1",
        "GHOSTLY_EVENTS_RETRY_DELAY_S": "0",
        "GHOSTLY_NATS_PORT": "4222",
        "GHOSTLY_NATS_BIN": str(key),
        "GHOSTLY_DEVICE_TIMEZONE": "Europe/Brussels",
        "GHOSTLY_INGEST_WORKERS": "0",
        "EMG_ANALYSIS_THREADS": "2",
        "GHOSTLY_INGEST_CLAIM_LEASE_S": "30",
        "GHOSTLY_INGEST_SWEEP_GRACE_S": "600",
        "GHOSTLY_JIT_SIGNAL_MEMORY_BYTES": "0",
        "GHOSTLY_JIT_PAYLOAD_MEMORY_BYTES": "1000",
        "GHOSTLY_ANALYSIS_MEMORY_BUDGET_MB": "0",
        "GHOSTLY_JIT_COLD_COMPUTATIONS": "1",
        "GHOSTLY_EXPORT_SESSION_CONCURRENCY": "1",
        "GHOSTLY_DB_POOL_MIN": "0",
        "GHOSTLY_DB_POOL_MAX": "1",
        "GHOSTLY_HEALTH_INTERVAL_S": "0.05",
        "GHOSTLY_SHUTDOWN_GRACE_S": "0",
        "GHOSTLY_LOG_LEVEL": "warning",
        "GHOSTLY_EVENT_LOOP": "ASYNCIO",
        "GHOSTLY_AUTH_MODE": "Dev",
        "GHOSTLY_JWT_ALGORITHM": "rs256",
        "GHOSTLY_JWT_SECRET": " spaces kept ",
        "GHOSTLY_JWT_PUBLIC_KEY": f"@{key}",
        "GHOSTLY_JWT_ISSUER": "idp",
        "GHOSTLY_JWT_AUDIENCE": "api",
        "GHOSTLY_TOKEN": "a.b.c",
        "GHOSTLY_INGEST_DB_PASSWORD": "pw-ingest-0123",
        "GHOSTLY_STATISTICS_DB_PASSWORD": "pw-statistics-0",
        "GHOSTLY_JIT_SIGNAL_DB_PASSWORD": "pw-jit-0123456",
        "GHOSTLY_EXPORT_DB_PASSWORD": "pw-export-01234",
        "GHOSTLY_TLS_CERT": str(key),
        "GHOSTLY_TLS_KEY": str(key),
        "GHOSTLY_TLS_CA": str(key),
        "GHOSTLY_TLS_CLIENT_AUTH": "require",
        "GHOSTLY_TLS_CLIENT_CERT": str(key),
        "GHOSTLY_TLS_CLIENT_KEY": str(key),
    }
    documented = set(re.findall(r"^\| ([A-Z][A-Z0-9_]+)", config_mod.__doc__, re.M))
    documented.discard("GHOSTLY_")  # the GHOSTLY_<NAME>_ADDRESS row
    assert documented <= set(good), documented - set(good)
    cfg = config_mod.load(good)
    assert cfg.ports["jit_signal"] == 50063 and cfg.metrics_ports["ingest"] == 0
    assert (cfg.log_level, cfg.event_loop, cfg.auth.mode, cfg.auth.algorithm) == ("WARNING", "asyncio", "dev", "RS256")
    assert cfg.auth.secret == " spaces kept " and cfg.targets["export"] == "unix:/run/ghostly/export.sock"
    assert (cfg.db_pool_min, cfg.db_pool_max, cfg.shutdown_grace_s) == (0, 1, 0.0)


def test_enum_names_the_variable_the_value_and_the_choices():
    assert refused({"GHOSTLY_AUTH_MODE": "jtw"}) == ["GHOSTLY_AUTH_MODE='jtw' is not allowed: one of dev, jwt"]
    assert (
        str(refused({"GHOSTLY_EVENT_LOOP": "trio"})[0])
        == "GHOSTLY_EVENT_LOOP='trio' is not allowed: one of uvloop, asyncio"
    )
    assert refused({"GHOSTLY_LOG_LEVEL": "verbose"}) == [
        "GHOSTLY_LOG_LEVEL='verbose' is not allowed: one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
    ]
    assert refused({"GHOSTLY_JWT_ALGORITHM": "none"}) == [
        "GHOSTLY_JWT_ALGORITHM='none' is not allowed: one of HS256, RS256"
    ]


def test_a_non_numeric_value_names_the_variable():
    assert refused({"GHOSTLY_DB_POOL_MAX": "ten"}) == ["GHOSTLY_DB_POOL_MAX='ten' is not allowed: an integer >= 1"]
    assert refused({"GHOSTLY_HEALTH_INTERVAL_S": "2s"}) == [
        "GHOSTLY_HEALTH_INTERVAL_S='2s' is not allowed: a number > 0 (seconds)"
    ]
    assert refused({"GHOSTLY_MAX_UPLOAD_BYTES": "1e9"}) == [
        "GHOSTLY_MAX_UPLOAD_BYTES='1e9' is not allowed: an integer >= 1"
    ]


@pytest.mark.parametrize(
    "var, value, allowed",
    [
        ("GHOSTLY_DB_POOL_MAX", "-1", "an integer >= 1"),
        ("GHOSTLY_DB_POOL_MAX", "0", "an integer >= 1"),
        ("GHOSTLY_DB_POOL_MIN", "-1", "an integer >= 0"),
        ("GHOSTLY_EXPORT_SESSION_CONCURRENCY", "0", "an integer >= 1"),
        ("GHOSTLY_INGEST_WORKERS", "-2", "an integer >= 0 (0 = number of CPUs)"),
        ("EMG_ANALYSIS_THREADS", "0", "an integer >= 1"),
        ("GHOSTLY_MAX_UPLOAD_BYTES", "0", "an integer >= 1"),
        ("GHOSTLY_MAX_MESSAGE_BYTES", "100", "an integer from 1024 to 2147483647"),
        ("GHOSTLY_MAX_MESSAGE_BYTES", str(1 << 31), "an integer from 1024 to 2147483647"),
        ("GHOSTLY_CACHE_MAX_BYTES", "-1", "an integer >= 0 (0 = nothing kept on disk)"),
        ("GHOSTLY_JIT_SIGNAL_MEMORY_BYTES", "-5", "an integer >= 0 (0 = nothing kept)"),
    ],
)
def test_integer_ranges(var, value, allowed):
    assert refused({var: value}) == [f"{var}={value!r} is not allowed: {allowed}"]


@pytest.mark.parametrize(
    "var, value, allowed",
    [
        ("GHOSTLY_INGEST_PORT", "0", "an integer from 1 to 65535"),  # clients could not find it
        ("GHOSTLY_STATISTICS_PORT", "65536", "an integer from 1 to 65535"),
        ("GHOSTLY_PG_PORT", "-1", "an integer from 1 to 65535"),
        ("GHOSTLY_EXPORT_METRICS_PORT", "70000", "an integer from 0 to 65535 (0 = no endpoint)"),
        ("GHOSTLY_INGEST_METRICS_PORT", "off", "an integer from 0 to 65535 (0 = no endpoint)"),
    ],
)
def test_ports(var, value, allowed):
    assert refused({var: value}) == [f"{var}={value!r} is not allowed: {allowed}"]


@pytest.mark.parametrize(
    "var, value, allowed",
    [
        ("GHOSTLY_HEALTH_INTERVAL_S", "0", "a number > 0 (seconds)"),
        ("GHOSTLY_HEALTH_INTERVAL_S", "nan", "a number > 0 (seconds)"),
        ("GHOSTLY_HEALTH_INTERVAL_S", "inf", "a number > 0 (seconds)"),
        ("GHOSTLY_SHUTDOWN_GRACE_S", "-1", "a number >= 0 (seconds)"),
    ],
)
def test_intervals(var, value, allowed):
    assert refused({var: value}) == [f"{var}={value!r} is not allowed: {allowed}"]


def test_pool_minimum_above_maximum():
    assert refused({"GHOSTLY_DB_POOL_MIN": "20"}) == [
        "GHOSTLY_DB_POOL_MIN='20' is not allowed: at most GHOSTLY_DB_POOL_MAX (10)"
    ]
    assert refused({"GHOSTLY_DB_POOL_MIN": "5", "GHOSTLY_DB_POOL_MAX": "2"}) == [
        "GHOSTLY_DB_POOL_MIN='5' is not allowed: at most GHOSTLY_DB_POOL_MAX (2)"
    ]
    # A refused maximum is reported once, not again as a comparison.
    assert refused({"GHOSTLY_DB_POOL_MIN": "5", "GHOSTLY_DB_POOL_MAX": "x"}) == [
        "GHOSTLY_DB_POOL_MAX='x' is not allowed: an integer >= 1"
    ]


@pytest.mark.parametrize("var", ["DATABASE_URL", "STATISTICS_DATABASE_URL"])
@pytest.mark.parametrize(
    "value", ["mysql://u@h/db", "localhost:5432/ghostly", "host=db dbname=ghostly", "postgresql//u@h/db"]
)
def test_database_urls(var, value):
    assert refused({var: value}) == [
        f"{var}={value!r} is not allowed: a PostgreSQL URL: "
        "postgresql://user:password@host:port/database (or postgres://...)"
    ]


def test_a_refused_url_does_not_show_its_password():
    [problem] = refused({"DATABASE_URL": "mysql://ghostly:hunter2@db/ghostly"})
    assert "hunter2" not in problem and "'mysql://ghostly:***@db/ghostly'" in problem


def test_paths(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for var in ("GHOSTLY_DATA_DIR", "GHOSTLY_STORE_DIR", "GHOSTLY_CACHE_DIR", "GHOSTLY_PGDATA", "GHOSTLY_PG_BIN"):
        assert refused({var: str(a_file)}) == [
            f"{var}={str(a_file)!r} is not allowed: a directory path; this one exists and is not a directory"
        ]
    # A directory that does not exist yet is fine: the services create it.
    assert (
        config_mod.load({"GHOSTLY_STORE_DIR": str(tmp_path / "new" / "store")}).store_dir == tmp_path / "new" / "store"
    )


@pytest.mark.parametrize(
    "value",
    [
        "statistics",
        "statistics:",
        ":50052",
        "statistics:0",
        "statistics:99999",
        "statistics:port",
        "http://statistics:50052",
    ],
)
def test_addresses(value):
    assert refused({"GHOSTLY_STATISTICS_ADDRESS": value}) == [
        f"GHOSTLY_STATISTICS_ADDRESS={value!r} is not allowed: host:port with a port from 1 to 65535, "
        "or a gRPC target such as dns:///host:port"
    ]


def test_host_timezone_and_public_key(tmp_path):
    assert refused({"GHOSTLY_HOST": "0.0.0.0:50051/x"}) == [
        "GHOSTLY_HOST='0.0.0.0:50051/x' is not allowed: a host name or IP address to bind, e.g. 127.0.0.1, "
        "0.0.0.0 or ::"
    ]
    assert refused({"GHOSTLY_DEVICE_TIMEZONE": "Mars/Olympus"}) == [
        "GHOSTLY_DEVICE_TIMEZONE='Mars/Olympus' is not allowed: an IANA time zone name, e.g. UTC or Europe/Brussels"
    ]
    missing = f"@{tmp_path / 'nope.pem'}"
    assert refused({"GHOSTLY_JWT_PUBLIC_KEY": missing}) == [
        f"GHOSTLY_JWT_PUBLIC_KEY={missing!r} is not allowed: a PEM public key, or @/path/to/key.pem naming an "
        "existing file"
    ]


def test_boolean_parser():
    """For on/off settings (none is documented yet): the usual spellings, anything else refused."""
    for text in ("1", "true", "Yes", " ON "):
        assert config_mod._boolean(text) is True
    for text in ("0", "false", "No", "off"):
        assert config_mod._boolean(text) is False
    with pytest.raises(config_mod._Refused, match="a boolean: one of 1, true, yes, on, 0, false, no, off"):
        config_mod._boolean("maybe")


def test_every_bad_value_is_reported_together():
    env = {
        "GHOSTLY_AUTH_MODE": "jtw",
        "GHOSTLY_DB_POOL_MAX": "-1",
        "GHOSTLY_INGEST_PORT": "abc",
        "DATABASE_URL": "mysql://h/db",
        "GHOSTLY_LOG_LEVEL": "loud",
        "GHOSTLY_HEALTH_INTERVAL_S": "0",
        "GHOSTLY_SHUTDOWN_GRACE_S": "2",
    }  # one good value among them
    with pytest.raises(ConfigError) as info:
        config_mod.load(env)
    problems = info.value.problems
    assert len(problems) == 6, problems
    for var in (
        "GHOSTLY_AUTH_MODE",
        "GHOSTLY_DB_POOL_MAX",
        "GHOSTLY_INGEST_PORT",
        "DATABASE_URL",
        "GHOSTLY_LOG_LEVEL",
        "GHOSTLY_HEALTH_INTERVAL_S",
    ):
        assert sum(p.startswith(f"{var}=") for p in problems) == 1, var
    message = str(info.value)
    assert message.startswith("6 settings are not allowed:\n")
    assert all(f"  {p}" in message.splitlines() for p in problems)


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("GHOSTLY_") and k != "DATABASE_URL"}
    full.update(env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args, prefix",
    [
        (["-m", "app.cli", "status"], "ghostly: "),
        (["-m", "app.cli", "serve", "statistics"], "statistics: "),
        (["-m", "services.ingest"], "ingest: "),
        (["-m", "app.healthcheck", "export"], "healthcheck: "),
    ],
)
def test_entry_points_print_the_message_and_exit_2_without_traceback(args, prefix):
    result = _run(args, GHOSTLY_AUTH_MODE="jtw", GHOSTLY_DB_POOL_MAX="-1")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"{prefix}2 settings are not allowed:",
        "  GHOSTLY_AUTH_MODE='jtw' is not allowed: one of dev, jwt",
        "  GHOSTLY_DB_POOL_MAX='-1' is not allowed: an integer >= 1",
    ]


def test_a_single_bad_value_is_one_line():
    result = _run(["-m", "app.cli", "status"], GHOSTLY_STATISTICS_PORT="fifty")
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "ghostly: GHOSTLY_STATISTICS_PORT='fifty' is not allowed: an integer from 1 to 65535"
    )
