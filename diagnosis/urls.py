from __future__ import annotations

from django.urls import path

from diagnosis.views import exports, files, oversight, studies, uploads, worklist

app_name = "diagnosis"

urlpatterns = [
    path("", worklist.worklist, name="worklist"),
    path("worklist/rows/", worklist.worklist_rows, name="worklist-rows"),
    path("worklist/changes/", worklist.worklist_changes, name="worklist-changes"),
    path("studies/upload/", uploads.upload, name="upload"),
    path("studies/<int:pk>/", studies.study_detail, name="study"),
    path("studies/<int:pk>/reading-form/", studies.study_reading, name="study-reading"),
    path("studies/<int:pk>/neighbours/", worklist.study_neighbours, name="study-neighbours"),
    path("studies/<int:pk>/results/", studies.study_results, name="study-results"),
    path("studies/<int:pk>/reading/", studies.reading_sign, name="reading-sign"),
    path("studies/<int:pk>/reanalyse/", studies.study_reanalyse, name="study-reanalyse"),
    path("studies/<int:pk>/report/", studies.study_report, name="report"),
    path("studies/<int:pk>/report.pdf", studies.study_report_pdf, name="report-pdf"),
    path("pacs-exports/<int:pk>/resend/", studies.pacs_export_resend, name="pacs-export-resend"),
    path("predictions/<int:pk>/rerun/", studies.prediction_rerun, name="prediction-rerun"),
    path(
        "predictions/<int:pk>/heatmap-layer.png",
        files.prediction_heatmap,
        name="prediction-heatmap-layer",
    ),
    path("predictions/<int:pk>/overlay.png", files.prediction_overlay, name="prediction-overlay"),
    path(
        "predictions/<int:pk>/class-heatmap/",
        studies.class_heatmap_request,
        name="class-heatmap-request",
    ),
    path("heatmaps/<int:pk>.png", files.class_heatmap_file, name="class-heatmap"),
    path("images/<int:pk>/display.png", files.image_display, name="image-display"),
    path("images/<int:pk>/original", files.image_original, name="image-original"),
    path("agreement/", oversight.agreement, name="agreement"),
    path("audit/", oversight.audit_log, name="audit"),
    path("exports/", exports.exports, name="exports"),
]
