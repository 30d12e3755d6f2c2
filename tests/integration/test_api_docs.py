"""``/docs`` of ``hubferry serve`` works offline: Swagger UI comes from a package, not a CDN."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hubferry.api.app import create_app
from hubferry.config import Settings
from hubferry.services.context import open_context


def test_docs_page_and_its_assets_are_served_locally(tmp_path):
    client = TestClient(create_app(open_context(Settings(home=tmp_path)), run_consumer=False))
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text
    for asset in ("/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css"):
        assert asset in page.text
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 10_000
    assert client.get("/openapi.json").json()["info"]["title"] == "hubferry"
