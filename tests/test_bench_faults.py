"""``reco bench faults``: the recovery and counting rules on hand-built samples, and one real
fault (Redis killed under load) end to end with tiny settings."""

from __future__ import annotations

import pytest

from Prod.bench.faults import (
    FaultsConfig,
    Sample,
    recovery_point,
    run_faults_bench,
    summarise,
)
from Prod.common.errors import InvalidInput

ENDPOINTS = ("recommend", "chat")


def test_recovery_waits_for_every_endpoint_after_the_last_failure():
    samples = [
        Sample("recommend", 503, 9.0, 10.5),  # sent while down, answered after the restart
        Sample("chat", 200, 10.2, 10.4),  # started before the last failure ended: not counted
        Sample("recommend", 200, 10.6, 10.7),
        Sample("chat", 200, 10.8, 11.2),
    ]
    assert recovery_point(samples, since=10.0, endpoints=ENDPOINTS) == (10.5, 11.2)
    assert recovery_point(samples[:3], since=10.0, endpoints=ENDPOINTS) == (10.5, None)


def test_failures_before_the_restart_do_not_delay_recovery():
    samples = [
        Sample("chat", 0, 5.0, 6.0),
        Sample("recommend", 200, 10.1, 10.2),
        Sample("chat", 200, 10.1, 10.3),
    ]
    assert recovery_point(samples, since=10.0, endpoints=ENDPOINTS) == (10.0, 10.3)


def test_summary_separates_503_from_server_errors_and_dropped_connections():
    samples = [Sample("chat", s, 0, 1) for s in (200, 201, 503, 500, 502, 0, 404)]
    report = summarise("postgres", samples)
    assert (report.requests, report.non_2xx, report.status_503) == (7, 5, 1)
    assert (report.server_errors, report.transport_errors) == (2, 1)
    assert report.by_endpoint == {"chat": {"requests": 7, "non_2xx": 5}}


def test_unknown_fault_is_refused_before_anything_starts():
    with pytest.raises(InvalidInput, match="disk"):
        run_faults_bench(FaultsConfig(faults=("disk",)))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_redis_killed_under_load_loses_nothing_and_recovers():
    messages: list[str] = []
    cfg = FaultsConfig(faults=("redis",), seconds=3, warmup_s=1, window_s=1, max_recovery_s=30)
    result = run_faults_bench(cfg, messages.append)

    (row,) = result["faults"]
    assert row["fault"] == "redis"
    assert set(row) >= {
        "requests",
        "non_2xx",
        "server_errors",
        "acknowledged_missing",
        "recovery_s",
        "recovered",
    }
    assert set(row["by_endpoint"]) == {"recommend", "interactions", "chat"}
    assert row["requests"] > 0 and row["acknowledged"] > 0
    assert row["server_errors"] == 0 and row["transport_errors"] == 0
    assert row["acknowledged_missing"] == 0
    assert row["recovered"] and row["recovery_s"] is not None
    assert result["app_processes_exited"] == []
    assert result["targets"]["all_met"], result
    assert any("redis killed" in m for m in messages)
