from __future__ import annotations

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("datasets/", views.dataset_list, name="datasets"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset"),
    path("datasets/<int:pk>/status/", views.dataset_status, name="dataset-status"),
    path("runs/", views.run_list, name="runs"),
    path("runs/new/", views.run_start, name="run-start"),
    path("runs/<int:pk>/", views.run_detail, name="run"),
    path("runs/<int:pk>/status/", views.run_status, name="run-status"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run-cancel"),
    path("runs/<int:pk>/plots/<str:kind>.png", views.run_plot, name="run-plot"),
    path("models/", views.version_list, name="versions"),
    path("models/<int:pk>/", views.version_detail, name="version"),
    path("models/<int:pk>/evaluations/", views.version_evaluations, name="version-evaluations"),
    path("models/<int:pk>/evaluate/", views.version_evaluate, name="version-evaluate"),
    path("models/<int:pk>/promote/", views.version_promote, name="version-promote"),
    path("models/<int:pk>/checkpoint.pt", views.version_checkpoint, name="version-checkpoint"),
    path("evaluations/<int:pk>/plots/<str:kind>.png", views.evaluation_plot,
         name="evaluation-plot"),
    path("compare/", views.compare, name="compare"),
    path("compare/results/", views.compare_results, name="compare-results"),
]
