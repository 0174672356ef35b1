"""The worklist: the page, its table alone and the changes poll that the open page uses, and a
study's neighbours in the worklist's reading order."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from cxrweb.audit.models import AuditEvent
from cxrweb.permissions import clinical_user_required
from diagnosis import selectors
from diagnosis.audit import audit_view
from diagnosis.forms import WorklistFilterForm
from training.models import ModelVersion

Action = AuditEvent.Action


def _worklist_filters(request) -> tuple[WorklistFilterForm, dict]:
    form = WorklistFilterForm(request.GET or None, findings=selectors.known_findings())
    filters = form.cleaned_data if form.is_valid() else {}
    return form, {k: v for k, v in filters.items() if v}


def _worklist_table(request, *, view: str) -> dict:
    """The worklist table's context (rows of the requested filters and page), audited as `view`."""
    form, filters = _worklist_filters(request)
    page = Paginator(selectors.worklist(**filters), 25).get_page(request.GET.get("page"))
    rows = []
    for study in page:
        predictions = selectors.study_predictions(study)
        readings = selectors.study_readings(study)
        rows.append(
            {
                "study": study,
                "result": selectors.study_result(study),
                # a study waiting for a model version says so in its status
                "waiting": any(p.is_waiting_for_model for p in predictions),
                "reading": readings[0] if readings else None,
            }
        )
    if rows:  # the page lists these patients' studies and results: one event names them all
        audit_view(
            request,
            Action.VIEW_STUDY,
            None,
            view=view,
            study=None,
            detail={
                "studies": [r["study"].pk for r in rows],
                "patients": [r["study"].patient.mrn for r in rows],
            },
        )
    query = request.GET.copy()
    query.pop("page", None)
    return {"form": form, "page": page, "rows": rows, "query": query.urlencode()}


@require_safe
@clinical_user_required
def worklist(request):
    token = selectors.worklist_token()  # before the rows: a change while they are read shows next
    context = {**_worklist_table(request, view="worklist"), "token": token}
    context["production"] = ModelVersion.objects.filter(
        status=ModelVersion.Status.PRODUCTION
    ).first()
    return render(request, "diagnosis/worklist.html", context)


@require_safe
@never_cache
@clinical_user_required
def worklist_rows(request):
    """The worklist's table alone (same filters and page), which the open page fetches when
    worklist_changes says something changed. Patient data: audited as the page is, a repeat of
    the same rows within the coalescing window being the one event already written."""
    return render(
        request, "diagnosis/_worklist_table.html", _worklist_table(request, view="worklist-live")
    )


@require_safe
@never_cache
@clinical_user_required
def worklist_changes(request):
    """GET ?since=TOKEN[&filters]: {token, changed, new}, polled by the open worklist. `new`
    counts the studies matching the filters uploaded since TOKEN. No patient data: not audited."""
    since = request.GET.get("since", "")
    token = selectors.worklist_token()
    new = 0
    if token.partition(".")[0] != since.partition(".")[0]:  # a study was uploaded since
        new = selectors.worklist_new_count(since=since, filters=_worklist_filters(request)[1])
    return JsonResponse({"token": token, "changed": token != since, "new": new})


@require_safe
@clinical_user_required
def study_neighbours(request, pk: int):
    """The studies before and after this one in the worklist's reading order (the study page's
    j and k keys): the order is the worklist selector's own, not a copy of it. With the
    worklist's filters (the query the page was opened from, which the study page passes on), the
    neighbours are the filtered list's; a study that left the filter (it was just signed, under
    "not reviewed") keeps its place, so j still goes on to the next one. Links only, no patient
    data, so no audit event: the study page they lead to records its own view."""
    order = list(selectors.worklist().values_list("pk", flat=True))
    try:
        at = order.index(pk)
    except ValueError:
        raise Http404("No such study.") from None
    filters = _worklist_filters(request)[1]
    kept = set(selectors.worklist(**filters).values_list("pk", flat=True)) if filters else None
    listed = order if kept is None else [p for p in order if p in kept]
    before = [p for p in order[:at] if kept is None or p in kept]
    after = [p for p in order[at + 1 :] if kept is None or p in kept]

    def link(study: int | None) -> str | None:
        return reverse("diagnosis:study", args=[study]) if study is not None else None

    response = JsonResponse(
        {
            "previous": link(before[-1] if before else None),
            "next": link(after[0] if after else None),
            "position": listed.index(pk) + 1 if pk in listed else None,
            "count": len(listed),
            "filtered": bool(filters),
        }
    )
    response["Cache-Control"] = "no-store"
    return response
