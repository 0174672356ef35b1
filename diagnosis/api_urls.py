from __future__ import annotations

from django.urls import path

from diagnosis import api

app_name = "api"

urlpatterns = [
    path("studies/", api.StudyListCreate.as_view(), name="studies"),
    path("studies/<int:pk>/", api.StudyDetail.as_view(), name="study"),
    path("studies/<int:pk>/readings/", api.StudyReadings.as_view(), name="study-readings"),
    path("dicom/peek/", api.DicomPeek.as_view(), name="dicom-peek"),
    path("predictions/<int:pk>/", api.PredictionDetail.as_view(), name="prediction"),
    path("predictions/<int:pk>/heatmap.png",
         api.PredictionFile.as_view(field="overlay"), name="prediction-heatmap"),
    path("predictions/<int:pk>/cam.png", api.PredictionFile.as_view(field="heatmap"),
         name="prediction-cam"),
]
