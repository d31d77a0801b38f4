"""Start-up refuses placeholder secrets outside local/test (config.Settings validator)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config import MIN_API_KEY_LENGTH, Settings

REAL_KEY = "k" * MIN_API_KEY_LENGTH
DATABASE_URL = "postgresql+psycopg://reco:{password}@postgresdb:5432/reco"
REDIS_URL = "redis://:{password}@redis:6379/0"
STRONG = "Zq3-generated-password-9xT"


def _settings(**overrides) -> Settings:
    values = {
        "environment": "docker",
        "api_key": REAL_KEY,
        "database_url": DATABASE_URL.format(password=STRONG),
        "redis_url": REDIS_URL.format(password=STRONG),
        "_env_file": None,  # only what the test passes (plus the process environment)
    }
    return Settings(**{**values, **overrides})


@pytest.mark.parametrize("environment", ["docker", "production"])
@pytest.mark.parametrize("api_key", [None, "", "x", "changeme", "k" * (MIN_API_KEY_LENGTH - 1)])
def test_short_api_key_is_refused_outside_local_and_test(environment, api_key):
    with pytest.raises(ValidationError) as raised:
        _settings(environment=environment, api_key=api_key)
    message = str(raised.value)
    assert f"API_KEY must be a secret of at least {MIN_API_KEY_LENGTH} characters" in message
    assert f"ENVIRONMENT={environment}" in message
    assert "secrets.token_urlsafe" in message  # says how to make one


def test_real_secrets_are_accepted_in_docker_and_production():
    for environment in ("docker", "production"):
        assert _settings(environment=environment).api_key == REAL_KEY


@pytest.mark.parametrize("password", ["reco-local-only", "postgres", "password", "PASSWORD"])
def test_default_postgres_password_is_refused_in_docker(password):
    with pytest.raises(
        ValidationError, match="DATABASE_URL uses a default password when ENVIRONMENT=docker"
    ):
        _settings(database_url=DATABASE_URL.format(password=password))


def test_postgres_url_without_password_is_refused_in_docker():
    with pytest.raises(ValidationError, match="DATABASE_URL has no password"):
        _settings(database_url="postgresql+psycopg://reco@postgresdb:5432/reco")


@pytest.mark.parametrize("url", ["redis://redis:6379/0", REDIS_URL.format(password="redis")])
def test_redis_without_a_real_password_is_refused_in_production(url):
    with pytest.raises(ValidationError, match="REDIS_URL (has no|uses a default) password"):
        _settings(environment="production", redis_url=url)


def test_percent_encoded_default_password_is_still_refused():
    with pytest.raises(ValidationError, match="DATABASE_URL uses a default password"):
        _settings(database_url=DATABASE_URL.format(password="reco%2Dlocal%2Donly"))


@pytest.mark.parametrize("environment", ["local", "test"])
def test_local_and_test_environments_accept_no_key(environment):
    settings = _settings(
        environment=environment,
        api_key=None,
        database_url="postgresql+psycopg://postgres@127.0.0.1:55432/postgres",
        redis_url="redis://127.0.0.1:56379/0",
    )
    assert settings.api_key is None


def test_shipped_dotenv_is_a_valid_local_configuration():
    """`.env` ships no secrets, and it need not: it sets ENVIRONMENT=local."""
    from config import ROOT

    settings = Settings(_env_file=ROOT / ".env")
    assert settings.environment in ("local", "test")
