"""Critical-finding webhook settings (docs/operations.md, "Critical-finding webhooks"), read
from the environment and checked as they are read; cxrweb/settings.py imports them."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from cxrweb.env import env_choice, env_float, env_positive_int, env_url

# The address of the app as users reach it (e.g. https://cxr.hospital.example), for links sent
# outside the app (the webhook's link to the study page). Empty: links are sent as paths only.
CXR_PUBLIC_URL = env_url("CXR_PUBLIC_URL").rstrip("/")
# Where a flagged study is announced (HTTP POST, JSON, HMAC-signed). Empty: no webhook.
CXR_WEBHOOK_URL = env_url("CXR_WEBHOOK_URL")
# The shared secret the body is signed with (HMAC-SHA256); required when the URL is set.
CXR_WEBHOOK_SECRET = os.environ.get("CXR_WEBHOOK_SECRET", "")
if CXR_WEBHOOK_URL and len(CXR_WEBHOOK_SECRET) < 16:
    raise ImproperlyConfigured(
        "CXR_WEBHOOK_SECRET must be set, at least 16 characters, when CXR_WEBHOOK_URL is: "
        "share a long random string with the receiver (e.g. `openssl rand -hex 32`)."
    )
# Which studies: "stat-flagged", a flagged study whose priority is STAT; "flagged", any.
CXR_WEBHOOK_ON = env_choice("CXR_WEBHOOK_ON", "stat-flagged", ("stat-flagged", "flagged"))
# Seconds to connect and to wait for the answer, per attempt.
CXR_WEBHOOK_TIMEOUT_S = env_float("CXR_WEBHOOK_TIMEOUT_S", 10.0, minimum=0.1)
# Attempts per delivery before it is marked failed (5xx, 408, 429, timeouts, refused
# connections are tried again; any other 4xx or 3xx fails at once).
CXR_WEBHOOK_MAX_ATTEMPTS = env_positive_int("CXR_WEBHOOK_MAX_ATTEMPTS", 8)
# The wait before the second attempt, doubled at each later one, at most CXR_WEBHOOK_BACKOFF_MAX_S.
CXR_WEBHOOK_BACKOFF_S = env_float("CXR_WEBHOOK_BACKOFF_S", 30.0, minimum=0)
CXR_WEBHOOK_BACKOFF_MAX_S = env_float("CXR_WEBHOOK_BACKOFF_MAX_S", 3600.0, minimum=0)
