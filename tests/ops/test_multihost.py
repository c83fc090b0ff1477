"""Multi-host proof (issue 19, item 4): PostgreSQL, two ingest replicas, statistics, jit_signal
and export -- and, for the bucket path, the S3 server and the broker -- each in its own network
namespace (tests/ops/netns.py: its own IP on one bridge, its own host name, its own data
directory), sharing nothing but the network. The services log in to PostgreSQL over it as their
own roles (migration 010) with their own passwords. Files are ingested (by upload, or through
the bucket and its events), reprocessed across both ingest replicas while one of them is killed
with SIGKILL in the middle of an item, and exported; every session completes exactly once.

Root, `ip netns` and PostgreSQL's server binaries needed (skipped otherwise); the bucket path also
needs moto[server], nats-py, boto3 and nats-server (skipped with the reason otherwise). ~30 s and
~45 s. bench/multihost.py runs the same with more files, real samples, and a second kill during
the event ingest."""

from __future__ import annotations

import asyncio
import importlib.util
import time

import pytest

from tests.ops import netns

pytestmark = [pytest.mark.timeout(240)]

N_FILES = 16


@pytest.fixture(scope="module", autouse=True)
def _namespaces_available():
    reason = netns.available()
    if reason:
        pytest.skip(f"multi-host test skipped: {reason}")
    try:
        netns.pg_bin()
    except Exception as exc:  # noqa: BLE001 - EmbeddedPostgresError: no initdb/postgres here
        pytest.skip(f"multi-host test skipped: {exc}")


def _bucket_events_missing() -> str | None:
    """Why the S3 + bucket-events path cannot run here, or None."""
    for module, what in (
        ("libs.storage.s3", "the S3 content store (libs/storage/s3.py)"),
        ("services.ingest.bucket_events", "the bucket-event consumer (services/ingest/bucket_events.py)"),
        ("moto.server", "moto[server] (the S3 server)"),
        ("nats", "nats-py"),
        ("boto3", "boto3 (the storage side's PUTs)"),
        ("aiobotocore", "aiobotocore"),
    ):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{what} is not installed / not in the tree"
    import shutil

    if not (shutil.which("nats-server") or __import__("os").path.exists("/usr/sbin/nats-server")):
        return "nats-server not found"
    return None


def _check_run(
    cluster: netns.Cluster, sids: dict[str, str], rep: dict, exp: dict, counts: dict, n: int, extra: dict
) -> None:
    """Every service logged in from its own host as its own role; every file one session, every
    session completed once by the Reprocess, exported."""
    wrong = netns.problems(sids, rep, exp, counts, n)
    if extra["logins"] != netns.EXPECTED_LOGINS:
        wrong.append(f"database logins by host {extra['logins']}, expected {netns.EXPECTED_LOGINS}")
    assert not wrong, (
        "\n".join(wrong) + f"\ncounts {counts}\nitems {rep['items']}\ntimings {cluster.timings}\n{cluster.logs()}"
    )


def _run(cluster: netns.Cluster, ingest, after_ingest=None) -> tuple[dict, dict, dict, dict, dict]:
    async def scenario():
        patient, researcher = await netns.seed_people(cluster)
        t = time.monotonic()
        sids = await ingest(patient)
        cluster.timings["ingest_s"] = time.monotonic() - t
        extra = await after_ingest() if after_ingest else {}
        extra["logins"] = await netns.connections(cluster)
        rep = await netns.reprocess_killing(cluster, via="ingest-a", victim="ingest-b")
        cluster.timings["reprocess_s"] = rep["reprocess_s"]
        exp = await netns.export_all(cluster, sorted(sids.values()), researcher)
        cluster.timings["export_s"] = exp["export_s"]
        return sids, rep, exp, await netns.consistency(cluster), extra

    return asyncio.run(scenario())


def _summary(rep: dict) -> str:
    by_host: dict[str, int] = {}
    for i in rep["items"]:
        host = i["claimed_by"].split(":")[0]
        by_host[host] = by_host.get(host, 0) + 1
    return (
        f"reprocess items by replica {by_host}, {rep['victim']} killed at {rep['kill_at_s']:.2f} s holding "
        f"item {rep['killed_item']} (finished by the survivor)"
    )


def test_upload_reprocess_with_a_killed_replica_and_export_across_hosts(tmp_path):
    files = netns.synthetic_files(tmp_path / "files", N_FILES)
    with netns.Cluster(tmp_path / "cluster", events=False, lease_s=2.0) as cluster:
        sids, rep, exp, counts, extra = _run(cluster, lambda patient: netns.ingest_by_upload(cluster, files, patient))
        _check_run(cluster, sids, rep, exp, counts, N_FILES, extra)
    print(f"\nmulti-host (upload, shared store): {_summary(rep)}; timings {cluster.timings}")


def test_bucket_events_reprocess_with_a_killed_replica_and_export_across_hosts(tmp_path):
    reason = _bucket_events_missing()
    if reason:
        pytest.skip(f"S3 + bucket events part skipped: {reason}")
    files = netns.synthetic_files(tmp_path / "files", N_FILES, seed0=7300)
    with netns.Cluster(tmp_path / "cluster", events=True, lease_s=2.0) as cluster:

        async def after_ingest():
            drained = await netns.events_drained(cluster)
            return {
                "drained": drained,
                "outcomes": netns.bucket_event_outcomes(cluster),
                "dead": await netns.dead_letters(cluster),
                "objects": sorted(
                    o["Key"] for o in cluster.s3_client().list_objects_v2(Bucket=netns.BUCKET).get("Contents", [])
                ),
            }

        sids, rep, exp, counts, extra = _run(
            cluster,
            lambda patient: netns.ingest_by_bucket_events(cluster, files, patient, duplicates=True),
            after_ingest,
        )
        _check_run(cluster, sids, rep, exp, counts, N_FILES, extra)
        # Every event was published twice (delivery is at least once): each file was ingested
        # once, by one of the two replicas sharing the durable consumer, its repeat found the
        # session; nothing was dead-lettered; the bucket holds just the files the storage side put.
        outcomes = extra["outcomes"]
        total = {
            k: sum(o.get(k, 0) for o in outcomes.values())
            for k in ("completed", "duplicate", "failed", "dead_lettered", "retried")
        }
        assert total["completed"] == N_FILES and total["duplicate"] == N_FILES, (outcomes, extra["drained"])
        assert total["failed"] == total["dead_lettered"] == 0 and extra["dead"] == 0, (outcomes, extra["dead"])
        assert len(extra["objects"]) == N_FILES and all(k.startswith(netns.S3_PREFIX + "/") for k in extra["objects"])
        assert not (tmp_path / "cluster" / "shared-store").exists()  # nothing but the bucket is shared
    print(
        f"\nmulti-host (S3 bucket + events): events by replica {outcomes}; {_summary(rep)}; timings {cluster.timings}"
    )
