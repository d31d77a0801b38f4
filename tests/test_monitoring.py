"""The `monitoring` compose profile: Prometheus scraping the three services, Grafana provisioned
with the Prometheus datasource and the dashboard in monitoring/grafana/dashboards/reco.json.

Docker cannot run here, so the compose file is rendered as in tests/test_compose.py (and checked
with the real `docker compose --profile monitoring config` where Compose and an engine exist);
every metric the dashboard queries is looked up in the real /metrics of the services: built in
process on the test stores, and (e2e) scraped from the platform started on the default dataset.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from Prod.orchestrate.docker import SECRETS
from Prod.orchestrate.environment import ROOT, compose_command, docker_engine_running, read_dotenv
from tests.test_compose import COMPOSE_PATH, _interpolate

DASHBOARD_PATH = ROOT / "monitoring" / "grafana" / "dashboards" / "reco.json"
# service -> (port variable, container port) as the app containers are configured
SERVICES = {
    "als_reco_engine": ("RECO_PORT", 8000),
    "chat_reco_engine": ("CHAT_PORT", 8001),
    "als_trainer": ("TRAINER_PORT", 8002),
}
PROMETHEUS_GENERATED = {"up"}  # series Prometheus writes itself, per scrape target
# domain metrics the dashboard leaves out on purpose (none today)
NOT_ON_THE_DASHBOARD: set[str] = set()


@pytest.fixture(scope="module")
def compose() -> dict:
    secrets = {name: f"generated-{name.lower()}-0123456789" for name in SECRETS}
    text = _interpolate(COMPOSE_PATH.read_text(), {**read_dotenv(ROOT / ".env"), **secrets})
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD_PATH.read_text())


def _mounted(compose: dict, service: str) -> dict[str, str]:
    """Container path -> repository file of each config the service mounts."""
    declared = compose["configs"]
    return {
        c["target"]: (ROOT / declared[c["source"]]["file"]).resolve()
        for c in compose["services"][service].get("configs", [])
    }


def _panels(dashboard: dict) -> list[dict]:
    """Every panel, those nested in collapsed rows included."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _queries(dashboard: dict) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]


_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels)."""
    bare = _GROUPING.sub(" ", _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub(" ", expr))))
    return {m for m in _IDENTIFIER.findall(bare) if m.lower() not in _KEYWORDS}


def test_metric_names_reads_selectors_not_functions_labels_or_keywords():
    expr = (
        'sum by (kind) (rate(reco_chat_unmatched_total{kind="x"}[5m])) / ignoring (kind) '
        "group_left sum(rate(reco_chat_turns_total[$__rate_interval])) "
        "and on (job) up == 1 or time() - reco_trainer_last_run_timestamp_seconds offset 1m"
    )
    assert metric_names(expr) == {
        "reco_chat_unmatched_total",
        "reco_chat_turns_total",
        "up",
        "reco_trainer_last_run_timestamp_seconds",
    }


def exposed_names(page: str) -> set[str]:
    """Every sample name a /metrics page offers; for a family with no sample yet (a model not
    yet loaded, a run not yet finished) its name, and ``_total`` / ``_bucket``... by type."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in text_string_to_metric_families(page):
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
        names.update(sample.name for sample in family.samples)
    return names


# --- compose --------------------------------------------------------------------------------


def test_prometheus_and_grafana_sit_behind_the_monitoring_profile(compose):
    """Rendered as `docker compose config` renders it, plus the real command where Compose and
    an engine exist."""
    services = compose["services"]
    for name, image in (("prometheus", "prom/prometheus:v"), ("grafana", "grafana/grafana:")):
        assert services[name]["profiles"] == ["monitoring"], name
        assert services[name]["image"].startswith(image), services[name]["image"]
        assert not services[name]["image"].endswith(":latest")
    in_profile = {n for n, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert in_profile == {"prometheus", "grafana"}
    # a plain `docker compose up` starts what it started before: the services have no profile
    assert not any("profiles" in services[name] for name in SERVICES)
    # Prometheus stays on the internal network with the services; only Grafana is published
    assert services["prometheus"]["networks"] == ["backend"]
    assert "ports" not in services["prometheus"]
    assert "backend" in services["grafana"]["networks"]
    assert [p.rsplit(":", 1)[1] for p in services["grafana"]["ports"]] == ["3000"]
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name in ("prometheus", "grafana"):
        mounted = _mounted(compose, name)
        assert mounted and all(path.is_file() for path in mounted.values()), (name, mounted)
        assert all(path.is_relative_to(ROOT / "monitoring") for path in mounted.values())
        for volume in services[name]["volumes"]:
            assert volume.split(":", 1)[0] in compose["volumes"], volume
    command = compose_command()
    if command is not None and docker_engine_running():  # absent on our Docker-less machines
        secrets = {name: f"generated-{name.lower()}-0123456789" for name in SECRETS}
        result = subprocess.run(
            [*command, "-f", str(COMPOSE_PATH), "--profile", "monitoring", "config", "--services"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
            env={**os.environ, **secrets},
        )
        assert result.returncode == 0, result.stderr
        assert {"prometheus", "grafana"} <= set(result.stdout.split())


def test_prometheus_scrapes_every_service_s_metrics_with_the_api_key(compose):
    prometheus = compose["services"]["prometheus"]
    config_file = _mounted(compose, "prometheus")["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_file.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(SERVICES)
    started = " ".join(prometheus["command"]).replace("$$", "$")  # as the container gets it
    assert "--config.file=/etc/prometheus/prometheus.yml" in started
    for name, (port_variable, port) in SERVICES.items():
        job = jobs[name]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        assert [t for c in job["static_configs"] for t in c["targets"]] == [f"{name}:{port}"]
        assert compose["services"][name]["environment"][port_variable] == str(port)
        assert "backend" in compose["services"][name]["networks"]
        # /metrics needs the key: the entrypoint writes it where the job reads it
        key_files = job["http_headers"]["X-API-Key"]["files"]
        assert len(key_files) == 1 and f'"$API_KEY" > {key_files[0]}' in started
    assert prometheus["environment"]["API_KEY"] == "generated-api_key-0123456789"


def test_grafana_provisions_the_datasource_and_the_dashboard_it_queries(compose, dashboard):
    grafana = compose["services"]["grafana"]
    mounted = _mounted(compose, "grafana")
    [source] = yaml.safe_load(
        mounted["/etc/grafana/provisioning/datasources/prometheus.yml"].read_text()
    )["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090" in " ".join(compose["services"]["prometheus"]["healthcheck"]["test"])
    [provider] = yaml.safe_load(
        mounted["/etc/grafana/provisioning/dashboards/reco.yml"].read_text()
    )["providers"]
    dashboards_in = provider["options"]["path"]
    served = {target: path for target, path in mounted.items() if target.endswith(".json")}
    assert served == {f"{dashboards_in}/reco.json": DASHBOARD_PATH.resolve()}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in}/reco.json"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == source["uid"]


# --- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_with_a_query_in_every_panel(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    panels = _panels(dashboard)
    assert len({p["id"] for p in panels}) == len(panels), "panel ids repeat"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("x", "y", "w", "h")), panel["title"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):  # no two panels overlap
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat", "bargauge", "gauge", "table"}
        assert panel["title"] and panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_the_dashboard_shows_each_kind_of_metric_the_issue_names(dashboard):
    queried = set().union(*(metric_names(q) for q in _queries(dashboard)))
    wanted = {
        "reco_model_info",  # model version
        "reco_model_age_seconds",
        "reco_model_items",
        "reco_recommendations_total",  # strategy mix
        "reco_fold_in_duration_seconds_bucket",
        "reco_history_rows_buffered",
        "reco_history_rows_dropped_total",
        "reco_trainer_last_run_stage_duration_seconds",
        "reco_trainer_last_run_ndcg_at_10",
        "reco_trainer_last_run_status",
        "reco_chat_answers_total",  # LLM vs fallback
        "reco_chat_llm_duration_seconds_bucket",
        "reco_chat_llm_errors_total",
        "reco_chat_reranker_state",
        "reco_chat_unmatched_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
    }
    assert wanted <= queried, wanted - queried
    http = " ".join(q for q in _queries(dashboard) if "http_" in q)
    assert all(f"histogram_quantile({q}" in http for q in ("0.5", "0.95", "0.99"))
    assert 'status=~"5.."' in http


def _check_against(pages: dict[str, str], dashboard: dict) -> None:
    """Every metric a dashboard query selects is on some service's /metrics, and every domain
    metric (``reco_*``) the services offer is on the dashboard."""
    exposed = set().union(*(exposed_names(page) for page in pages.values()))
    for expr in _queries(dashboard):
        unknown = metric_names(expr) - exposed - PROMETHEUS_GENERATED
        assert not unknown, f"{expr!r} queries {unknown}, which no service exposes"
    queried = set().union(*(metric_names(q) for q in _queries(dashboard)))
    families = {
        family.name
        for page in pages.values()
        for family in text_string_to_metric_families(page)
        if family.name.startswith("reco_") and not family.name.endswith("_created")
    }
    missing = {
        name
        for name in families - NOT_ON_THE_DASHBOARD
        if not any(q == name or q.startswith(name + "_") for q in queried)
    }
    assert not missing, f"domain metrics not on the dashboard: {sorted(missing)}"


def test_every_dashboard_metric_is_on_the_services_metrics_pages(settings, dashboard):
    """The three apps built on the test stores, as their processes build them."""
    from Prod.als_reco_engine.main import create_app as reco_app
    from Prod.als_trainer.main import create_app as trainer_app
    from Prod.chat_reco_engine.main import create_app as chat_app

    pages = {}
    apps = {
        "als_reco_engine": reco_app(settings),
        "chat_reco_engine": chat_app(settings),
        "als_trainer": trainer_app(settings, schedule=False),
    }
    for name, app in apps.items():
        with TestClient(app) as client:
            assert client.get("/health").status_code in (200, 503)  # one counted request
            response = client.get("/metrics")
            assert response.status_code == 200, (name, response.text)
            pages[name] = response.text
    _check_against(pages, dashboard)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_dashboard_metric_is_on_the_running_platform_s_metrics(default_platform, dashboard):
    """The platform on the default dataset, scraped as Prometheus scrapes it."""
    urls = {
        "als_reco_engine": default_platform.reco,
        "chat_reco_engine": default_platform.chat,
        "als_trainer": default_platform.trainer,
    }
    httpx.get(f"{default_platform.reco}/api/v1/recommend/u00042", timeout=30).raise_for_status()
    # the model the engine serves is what the stats show (once it serves the trainer's active
    # one: another test may have just retrained)
    active = httpx.get(f"{default_platform.trainer}/api/v1/status", timeout=30).json()["active"]
    deadline = time.monotonic() + 60
    while True:
        status = httpx.get(f"{default_platform.reco}/api/v1/status", timeout=30).json()
        if status["model_version"] == active["version_id"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status["model_version"] == active["version_id"], (status, active)
    pages = {}
    for name, url in urls.items():
        response = httpx.get(f"{url}/metrics", timeout=30)
        assert response.status_code == 200, (name, response.text)
        pages[name] = response.text
    _check_against(pages, dashboard)
    info = f'reco_model_info{{version="{status["model_version"]}"}} 1.0'
    assert info in pages["als_reco_engine"], pages["als_reco_engine"]
