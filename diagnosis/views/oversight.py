"""The administrators' oversight pages: agreement of readings with each model version, and the
audit trail (a page, or the whole filtered trail as CSV)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from cxrweb.audit.models import AuditEvent
from cxrweb.audit.services import audit
from cxrweb.permissions import model_admin_required
from cxrweb.responses import csv_response
from diagnosis import selectors

Action = AuditEvent.Action


@require_safe
@model_admin_required
def agreement(request):
    return render(request, "diagnosis/agreement.html", {"rows": selectors.agreement_by_version()})


@require_safe
@model_admin_required
def audit_log(request):
    from diagnosis.forms import AuditFilterForm

    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    events = selectors.audit_events(**{k: v for k, v in filters.items() if v})
    if request.GET.get("format") == "csv":
        audit(
            request, Action.EXPORT, detail={"filters": {k: str(v) for k, v in filters.items() if v}}
        )
        return _audit_csv(events)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request, "diagnosis/audit.html", {"form": form, "page": page, "query": query.urlencode()}
    )


def _audit_csv(events) -> StreamingHttpResponse:
    header = [
        "at",
        "username",
        "action",
        "object_type",
        "object_id",
        "patient_mrn",
        "ip_address",
        "user_agent",
        "path",
        "detail",
    ]
    rows = (
        [
            e.at.isoformat(),
            e.username,
            e.action,
            e.object_type,
            e.object_id,
            e.patient_mrn,
            e.ip_address or "",
            e.user_agent,
            e.path,
            e.detail,
        ]
        for e in events.iterator(chunk_size=2000)
    )
    return csv_response("audit-trail.csv", header, rows)
