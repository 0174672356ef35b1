from __future__ import annotations

from django.urls import path

from training.views import calibrations, compare, datasets, overview, runs, versions

app_name = "training"

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("datasets/", datasets.dataset_list, name="datasets"),
    path("datasets/<int:pk>/", datasets.dataset_detail, name="dataset"),
    path("datasets/<int:pk>/status/", datasets.dataset_status, name="dataset-status"),
    path("runs/", runs.run_list, name="runs"),
    path("runs/new/", runs.run_start, name="run-start"),
    path("runs/<int:pk>/", runs.run_detail, name="run"),
    path("runs/<int:pk>/status/", runs.run_status, name="run-status"),
    path("runs/<int:pk>/cancel/", runs.run_cancel, name="run-cancel"),
    path("runs/<int:pk>/plots/<str:kind>.png", runs.run_plot, name="run-plot"),
    path("models/", versions.version_list, name="versions"),
    path("models/<int:pk>/", versions.version_detail, name="version"),
    path("models/<int:pk>/evaluations/", versions.version_evaluations, name="version-evaluations"),
    path("models/<int:pk>/evaluate/", versions.version_evaluate, name="version-evaluate"),
    path("models/<int:pk>/promote/", versions.version_promote, name="version-promote"),
    path("models/<int:pk>/calibrate/", calibrations.version_calibrate, name="version-calibrate"),
    path(
        "models/<int:pk>/calibrations/",
        calibrations.version_calibrations,
        name="version-calibrations",
    ),
    path(
        "models/<int:pk>/calibrations/<int:number>/activate/",
        calibrations.calibration_make_active,
        name="calibration-activate",
    ),
    path("models/<int:pk>/checkpoint.pt", versions.version_checkpoint, name="version-checkpoint"),
    path(
        "evaluations/<int:pk>/plots/<str:kind>.png",
        versions.evaluation_plot,
        name="evaluation-plot",
    ),
    path("compare/", compare.compare, name="compare"),
    path("compare/results/", compare.compare_results, name="compare-results"),
]
