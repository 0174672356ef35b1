"""The training overview page (training/views/overview.py)."""

from __future__ import annotations

import pytest

from tests.training.views.conftest import second_version

pytestmark = pytest.mark.django_db


def test_the_overview_shows_production_candidates_runs_and_datasets(
    admin_client, world, production_model
):
    candidate = second_version(production_model, metrics={"accuracy": 0.876})
    html = admin_client.get("/training/").content.decode()
    assert production_model.name in html and "normal, bacterial_pneumonia" in html
    assert candidate.name in html and "0.876" in html
    assert f'href="/training/runs/{world["runs"]["running"].pk}/"' in html
    assert 'data-refresh="3000"' in html  # a run is still going
    assert "kermany" in html and 'href="/agreement/"' in html
