from __future__ import annotations

from django.urls import path

from diagnosis import views

app_name = "diagnosis"

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("studies/upload/", views.upload, name="upload"),
    path("studies/<int:pk>/", views.study_detail, name="study"),
    path("studies/<int:pk>/results/", views.study_results, name="study-results"),
    path("predictions/<int:pk>/rerun/", views.prediction_rerun, name="prediction-rerun"),
    path("predictions/<int:pk>/heatmap.png", views.prediction_heatmap, name="prediction-heatmap"),
    path("predictions/<int:pk>/overlay.png", views.prediction_overlay, name="prediction-overlay"),
    path("images/<int:pk>/display.png", views.image_display, name="image-display"),
    path("images/<int:pk>/original", views.image_original, name="image-original"),
]
