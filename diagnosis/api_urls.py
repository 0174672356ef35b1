from __future__ import annotations

from django.urls import path

from diagnosis import api, api_schema, api_status

app_name = "api"

urlpatterns = [
    path("studies/", api.StudyListCreate.as_view(), name="studies"),
    path("studies/<int:pk>/", api.StudyDetail.as_view(), name="study"),
    path("studies/<int:pk>/readings/", api.StudyReadings.as_view(), name="study-readings"),
    path("dicom/peek/", api.DicomPeek.as_view(), name="dicom-peek"),
    path("predictions/status/", api_status.PredictionStates.as_view(), name="prediction-states"),
    path("predictions/<int:pk>/", api.PredictionDetail.as_view(), name="prediction"),
    path(
        "predictions/<int:pk>/overlay.png", api.PredictionFile.as_view(), name="prediction-overlay"
    ),
    path(
        "predictions/<int:pk>/heatmap-layer.png",
        api.PredictionFile.as_view(field="heatmap", file_name="heatmap-layer.png"),
        name="prediction-heatmap-layer",
    ),
    # v1's first names, deprecated (their answers say so and link the URL above that replaces
    # them): heatmap.png was the overlay, cam.png the heatmap layer.
    path(
        "predictions/<int:pk>/heatmap.png",
        api.PredictionFile.as_view(file_name="heatmap.png", successor="api:prediction-overlay"),
        name="deprecated-heatmap-png",
    ),
    path(
        "predictions/<int:pk>/cam.png",
        api.PredictionFile.as_view(
            field="heatmap", file_name="cam.png", successor="api:prediction-heatmap-layer"
        ),
        name="deprecated-cam-png",
    ),
    # The OpenAPI 3 schema of the URLs above, and its Swagger UI.
    path("schema/", api_schema.SchemaView.as_view(), name="schema"),
    path("docs/", api_schema.DocsView.as_view(), name="docs"),
]
