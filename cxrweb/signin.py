"""Sign-in throttling against password spraying (one password tried on many user names).

django-axes locks out a user name from an address after AXES_FAILURE_LIMIT failures. Spraying
fails once per user name and never reaches that. axes has one failure limit for all its lockout
parameters, and its maintainers suggest a handler for a second one (jazzband/django-axes#661):
this one also counts every failure from the address, and at CXR_SIGNIN_IP_FAILURE_LIMIT it locks
the address out, for every user name, for the same cool-off time.
"""

from __future__ import annotations

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_failure_limit
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import Sum


class SprayAwareAxesHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials: dict | None = None) -> int:
        """Failures of this user name from this address; at least the lockout limit once the
        address has CXR_SIGNIN_IP_FAILURE_LIMIT failures over all user names (axes compares
        this number with the limit both before a sign-in and after a failure)."""
        failures = super().get_failures(request, credentials)
        if address_failures(request) >= settings.CXR_SIGNIN_IP_FAILURE_LIMIT:
            return max(failures, get_failure_limit(request, credentials))
        return failures


def address_failures(request) -> int:
    """Failed sign-ins from the request's address within the cool-off time, any user name."""
    attempts = AccessAttempt.objects.filter(ip_address=request.axes_ip_address)
    if settings.AXES_COOLOFF_TIME is not None:
        attempts = attempts.filter(attempt_time__gte=get_cool_off_threshold(request))
    return attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
