from __future__ import annotations

from django.urls import path

from diagnosis import views

app_name = "diagnosis"

urlpatterns = [
    path("", views.worklist, name="worklist"),
    path("worklist/rows/", views.worklist_rows, name="worklist-rows"),
    path("worklist/changes/", views.worklist_changes, name="worklist-changes"),
    path("studies/upload/", views.upload, name="upload"),
    path("studies/<int:pk>/", views.study_detail, name="study"),
    path("studies/<int:pk>/reading-form/", views.study_reading, name="study-reading"),
    path("studies/<int:pk>/neighbours/", views.study_neighbours, name="study-neighbours"),
    path("studies/<int:pk>/results/", views.study_results, name="study-results"),
    path("studies/<int:pk>/reading/", views.reading_sign, name="reading-sign"),
    path("studies/<int:pk>/reanalyse/", views.study_reanalyse, name="study-reanalyse"),
    path("studies/<int:pk>/report/", views.study_report, name="report"),
    path("studies/<int:pk>/report.pdf", views.study_report_pdf, name="report-pdf"),
    path("predictions/<int:pk>/rerun/", views.prediction_rerun, name="prediction-rerun"),
    path("predictions/<int:pk>/heatmap-layer.png", views.prediction_heatmap,
         name="prediction-heatmap-layer"),
    path("predictions/<int:pk>/overlay.png", views.prediction_overlay, name="prediction-overlay"),
    path("predictions/<int:pk>/class-heatmap/", views.class_heatmap_request,
         name="class-heatmap-request"),
    path("heatmaps/<int:pk>.png", views.class_heatmap_file, name="class-heatmap"),
    path("images/<int:pk>/display.png", views.image_display, name="image-display"),
    path("images/<int:pk>/original", views.image_original, name="image-original"),
    path("agreement/", views.agreement, name="agreement"),
    path("audit/", views.audit_log, name="audit"),
]
