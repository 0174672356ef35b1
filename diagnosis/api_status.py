"""GET /api/v1/predictions/status/?ids=1,2,3: many predictions' state and server timestamps in
one query, for clients (and the benchmark) that track hundreds of uploads at once instead of
polling each prediction.

It returns no patient data and no result (no label, no probabilities): ids, status and times,
so it is not an audited view of a patient's record; the result itself is read, and audited,
through /api/v1/predictions/<id>/.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from diagnosis import api_schema
from diagnosis.models import Prediction

MAX_IDS = 1000


class _State(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Prediction.Status.choices)
    queued_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    compute_ms = serializers.FloatField(allow_null=True)


class _States(serializers.Serializer):
    predictions = _State(many=True)
    counts = serializers.DictField(child=serializers.IntegerField())
    missing = serializers.ListField(child=serializers.IntegerField())


def _ids(raw: str) -> list[int]:
    try:
        ids = sorted({int(part) for part in raw.split(",") if part.strip()})
    except ValueError as exc:
        raise ValueError(
            "ids must be prediction ids separated by commas, e.g. ids=12,13,14."
        ) from exc
    if not ids:
        raise ValueError("Give the predictions to report: ids=12,13,14.")
    if len(ids) > MAX_IDS:
        raise ValueError(f"At most {MAX_IDS} ids per request; split the list.")
    return ids


class PredictionStates(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "ids",
                OpenApiTypes.STR,
                required=True,
                description=f"Prediction ids separated by commas (at most {MAX_IDS}).",
            )
        ],
        responses={
            200: _States,
            400: OpenApiResponse(api_schema.Error, description="ids missing or malformed."),
            **api_schema.COMMON,
        },
    )
    def get(self, request):
        try:
            ids = _ids(request.query_params.get("ids", ""))
        except ValueError as exc:
            return Response({"error": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        rows = list(
            Prediction.objects.filter(pk__in=ids)
            .order_by("pk")
            .values("id", "status", "queued_at", "started_at", "finished_at", "compute_ms")
        )
        counts = {choice: 0 for choice in Prediction.Status.values}
        for row in rows:
            counts[row["status"]] += 1
        found = {row["id"] for row in rows}
        body = {
            "predictions": _States().fields["predictions"].to_representation(rows),
            "counts": counts,
            "missing": [i for i in ids if i not in found],
        }
        return Response(body)
