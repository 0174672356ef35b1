from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from diagnosis.dicomweb import StowRs, StowRsStudy

# A request Django refuses to read (too many fields or files): JSON on the API, a page elsewhere.
handler400 = "cxrweb.responses.bad_request"
# An unknown path: JSON under /api/ (clients parse every answer there), the usual page elsewhere.
handler404 = "cxrweb.responses.not_found"
# A refused page: the app's layout with a way to sign out; JSON under /api/.
handler403 = "cxrweb.responses.permission_denied"

admin.site.site_header = "CXR triage administration"
admin.site.site_title = "CXR triage"

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The audit trail's admin pages moved with the model to the audit app; old links still work.
    re_path(
        r"^admin/diagnosis/auditevent/(?P<rest>.*)$",
        RedirectView.as_view(url="/admin/audit/auditevent/%(rest)s", query_string=True),
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include("diagnosis.api_urls")),
    # DICOMweb STOW-RS (PS3.18): PACS and modalities store instances; docs/operations.md.
    path("dicomweb/studies", StowRs.as_view(), name="stow-rs"),
    re_path(
        r"^dicomweb/studies/(?P<study_uid>[0-9]+(?:\.[0-9]+)*)$",
        StowRsStudy.as_view(),
        name="stow-rs-study",
    ),
    path("training/", include("training.urls")),
    path("", include("diagnosis.urls")),
]
