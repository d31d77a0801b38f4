"""Without a browser: every service's /docs and /redoc point at files it serves itself (no CDN),
and the web app's proxy answers unknown or unreachable APIs in the documented error shape."""

from __future__ import annotations

import re
import secrets

import pytest
from fastapi.testclient import TestClient

from config import Settings
from Prod.orchestrate.local_infra import free_port

KEY = secrets.token_urlsafe(24)


def _factories():
    from Prod.als_reco_engine.main import create_app as reco
    from Prod.als_trainer.main import create_app as trainer
    from Prod.chat_reco_engine.main import create_app as chat

    return {"reco": reco, "chat": chat, "trainer": lambda s: trainer(s, schedule=False)}


@pytest.mark.parametrize("service", ["reco", "chat", "trainer"])
def test_docs_load_only_files_the_service_serves(service):
    app = _factories()[service](Settings(environment="test", api_key=KEY))
    client = TestClient(app)  # no lifespan: no store is touched
    for path, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        assert client.get(path).status_code == 401  # the docs still follow the key rule
        page = client.get(path, headers={"X-API-Key": KEY})
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?'([^']+)'""", page.text)
        loaded = [u for pair in urls for u in pair if u]
        assert f"/docs-assets/{asset}" in loaded, loaded
        assert not [u for u in loaded if u.startswith(("http:", "https:", "//"))], loaded
        # the assets are third-party code with no data: served without the key
        served = client.get(f"/docs-assets/{asset}")
        assert served.status_code == 200 and len(served.content) > 100_000


def test_the_proxy_names_an_unreachable_or_unknown_api():
    from Prod.web.main import create_app

    closed = free_port()  # nothing listens there
    settings = Settings(environment="test", api_key=KEY, web_reco_url=f"http://127.0.0.1:{closed}")
    with TestClient(create_app(settings)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "Shop assistant" in page.text
        assert KEY not in page.text and KEY not in client.get("/static/app.js").text
        down = client.get("/api/reco/status", headers={"X-API-Key": KEY})
        assert down.status_code == 503
        assert down.json()["error"]["store"] == "reco"
        assert f"127.0.0.1:{closed}" in down.json()["error"]["message"]
        unknown = client.get("/api/nope/status")
        assert (
            unknown.status_code == 404
            and "reco, chat, trainer" in unknown.json()["error"]["message"]
        )
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["apis"]["reco"] == "unreachable"
