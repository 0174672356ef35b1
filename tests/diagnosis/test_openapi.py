"""The API's OpenAPI 3 schema (/api/v1/schema/) and its documentation page (/api/v1/docs/): a
valid document that names every API URL, for the API's clinical users only (issue #25, item 5).
The page under the site's CSP in a real browser: tests/security/test_csp_browser.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

SCHEMA_URLS = {"api:schema", "api:docs"}  # the document and its page are not in it
# DICOMweb STOW-RS, in the schema beside the API.
OUTSIDE_API = {"/dicomweb/studies", "/dicomweb/studies/{study_uid}"}


def _api_routes(resolver: URLResolver, prefix: str = "", namespace: str = "") -> dict[str, str]:
    """URL name -> its route, as the schema writes it (`<int:pk>` -> `{id}`)."""
    routes = {}
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace or ""
            routes |= _api_routes(entry, route, inner.strip(":"))
        elif isinstance(entry, URLPattern) and entry.name and namespace == "api":
            routes[f"api:{entry.name}"] = "/" + re.sub(r"<(?:\w+:)?pk>", "{id}", route)
    return routes


@pytest.fixture
def schema(rad_client) -> dict:
    response = rad_client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_schema_validates_without_a_warning():
    done = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--validate", "--fail-on-warn"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["openapi"].startswith("3.")


def test_every_api_url_is_a_path_of_the_schema(schema):
    routes = _api_routes(get_resolver())
    assert SCHEMA_URLS <= routes.keys()
    expected = {route for name, route in routes.items() if name not in SCHEMA_URLS}
    assert expected and set(schema["paths"]) == expected | OUTSIDE_API


def test_it_declares_the_token_and_marks_the_deprecated_aliases(schema):
    token = schema["components"]["securitySchemes"]["tokenAuth"]
    assert (token["type"], token["in"], token["name"]) == ("apiKey", "header", "Authorization")
    paths = schema["paths"]
    assert all({"tokenAuth": []} in op["security"] for p in paths.values() for op in p.values())
    deprecated = {path for path, p in paths.items() for op in p.values() if op.get("deprecated")}
    assert deprecated == {
        "/api/v1/predictions/{id}/heatmap.png",
        "/api/v1/predictions/{id}/cam.png",
    }
    png = paths["/api/v1/predictions/{id}/overlay.png"]["get"]["responses"]["200"]["content"]
    assert png["image/png"]["schema"] == {"type": "string", "format": "binary"}


def test_it_describes_the_upload_and_the_errors(schema):
    upload = schema["paths"]["/api/v1/studies/"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    fields = schema["components"]["schemas"][form.rsplit("/", 1)[1]]["properties"]
    assert {"image", "patient_id", "accession_number", "confirm_identity"} <= fields.keys()
    assert {"201", "400", "401", "403", "409"} <= upload["responses"].keys()
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]


def test_it_answers_yaml_by_default_and_json_on_request(rad_client):
    response = rad_client.get("/api/v1/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert yaml.safe_load(response.content)["info"]["title"] == "CXR triage API"
    response = rad_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert json.loads(response.content)["openapi"].startswith("3.")


def test_the_docs_page_loads_swagger_ui_from_this_server(rad_client):
    response = rad_client.get("/api/v1/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<style" not in page and "<script>" not in page  # the CSP allows neither
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert scripts and all(src.startswith("/") for src in scripts)  # no CDN
    script = rad_client.get(scripts[-1].replace("&amp;", "&"))
    assert script["Content-Type"].startswith("application/javascript")
    assert b"/api/v1/schema/" in script.content


@pytest.mark.parametrize(
    "url, accept",
    [("/api/v1/schema/", "application/vnd.oai.openapi"), ("/api/v1/docs/", "text/html")],
)
def test_an_anonymous_client_gets_a_json_refusal(client, url, accept):
    response = client.get(url, HTTP_ACCEPT=accept)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert "error" in response.json()


@pytest.mark.parametrize("url", ["/api/v1/schema/", "/api/v1/docs/"])
def test_a_user_without_a_clinical_role_gets_a_json_403(client, outsider, url):
    client.force_login(outsider)
    response = client.get(url)
    assert response.status_code == 403
    assert "clinical role" in response.json()["error"]


def test_a_token_reads_the_schema(client, api_token):
    response = client.get("/api/v1/schema/", HTTP_AUTHORIZATION=f"Token {api_token}")
    assert response.status_code == 200
