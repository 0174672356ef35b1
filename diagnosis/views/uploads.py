"""The upload page: several files at once with JavaScript, one study of several files or one file
without it."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.db import DatabaseError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from cxrweb.permissions import clinical_user_required
from diagnosis import services
from diagnosis.audit import audit_upload, audit_upload_rejected
from diagnosis.forms import StudyUploadForm
from training.ml.imaging import UploadRejected

logger = logging.getLogger(__name__)


@require_http_methods(["GET", "POST"])
@clinical_user_required
def upload(request):
    """Several files at once with JavaScript (each posted to the API); one file without it."""
    context = {"max_upload_mb": settings.CXR_MAX_UPLOAD_BYTES // (1024 * 1024)}
    if request.method == "POST":
        form = StudyUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                kwargs = form.upload_kwargs()
                if len(form.image_files()) > 1:  # several files without JavaScript: one study
                    del kwargs["data"], kwargs["filename"]
                    uploaded = services.study_upload_many(
                        uploaded_by=request.user, files=form.upload_files(), **kwargs
                    )
                else:
                    uploaded = [services.study_upload(uploaded_by=request.user, **kwargs)]
                result = uploaded[0]
            except services.IdentityMismatch as exc:
                # The confirm step: both sets of details and the box to tick. The file is not
                # kept between the two posts, so it is chosen again.
                audit_upload_rejected(request, exc)
                return render(
                    request,
                    "diagnosis/upload.html",
                    {**context, "form": form, "identity_mismatch": exc},
                    status=409,
                )
            except UploadRejected as exc:
                audit_upload_rejected(request, exc)
                form.add_error(getattr(exc, "field", "image"), str(exc))
            except DatabaseError:
                logger.exception("upload failed: database unavailable")
                form.add_error(
                    None, "The database is unavailable; nothing was stored. Try again shortly."
                )
                return render(
                    request, "diagnosis/upload.html", {**context, "form": form}, status=503
                )
            except services.StorageUnavailable as exc:
                form.add_error(None, str(exc))
                return render(
                    request, "diagnosis/upload.html", {**context, "form": form}, status=503
                )
            else:
                for each in uploaded:
                    audit_upload(request, each, via="browser")
                messages.success(
                    request,
                    f"Uploaded {result.study.accession_number}"
                    f"{f' ({len(uploaded)} images)' if len(uploaded) > 1 else ''}; analysis queued.",
                )
                return redirect(result.study)
        return render(request, "diagnosis/upload.html", {**context, "form": form}, status=400)
    return render(request, "diagnosis/upload.html", {**context, "form": StudyUploadForm()})
