"""DICOM settings (docs/operations.md: "DICOM in", "Results to the PACS"), read from the
environment and checked as they are read; cxrweb/settings.py imports them."""

from __future__ import annotations

import re

import environ
from django.core.exceptions import ImproperlyConfigured

from cxrweb.env import env_ae_title, env_ae_titles, env_float, env_int, env_positive_int

env = environ.Env()

# DICOM in (docs/operations.md#dicom-in): the C-STORE SCP that `manage.py dicom_scp` (started by
# scripts/run.sh) runs, with its AE title; CXR_DICOM_ALLOWED_CALLING_AES (comma-separated) limits
# who may send, empty for any calling AE.
CXR_DICOM_HOST = env.str("CXR_DICOM_HOST", default="127.0.0.1")
CXR_DICOM_PORT = env_int("CXR_DICOM_PORT", 11112, minimum=1, maximum=65535)
CXR_DICOM_AE_TITLE = env_ae_title("CXR_DICOM_AE_TITLE", "CXRTRIAGE")
CXR_DICOM_ALLOWED_CALLING_AES = env_ae_titles("CXR_DICOM_ALLOWED_CALLING_AES")

# Results back out to the PACS (docs/operations.md, "Results to the PACS"): a DICOM SR and a
# Secondary Capture of the overlay per study, sent by the inference workers. CXR_PACS_URL: a
# DICOMweb base (STOW-RS to {url}/studies); else CXR_PACS_AE, host:port:AET for C-STORE; both
# empty: nothing is sent. CXR_PACS_SEND_ON: when a study's result is complete ("result"), when a
# reading is signed ("reading"), or "both".
CXR_PACS_URL = env.str("CXR_PACS_URL", default="").strip()
CXR_PACS_AE = env.str("CXR_PACS_AE", default="").strip()
if CXR_PACS_AE and not re.fullmatch(r"[^:\s]+:\d{1,5}:[^\\]{1,16}", CXR_PACS_AE):
    raise ImproperlyConfigured(
        f"CXR_PACS_AE must be host:port:AET (e.g. pacs.example.org:104:PACS), not {CXR_PACS_AE!r}"
    )
if CXR_PACS_URL and not re.match(r"https?://", CXR_PACS_URL):
    raise ImproperlyConfigured(
        f"CXR_PACS_URL must be an http(s) DICOMweb base URL, not {CXR_PACS_URL!r}"
    )
CXR_PACS_SEND_ON = env.str("CXR_PACS_SEND_ON", default="result").strip().lower()
if CXR_PACS_SEND_ON not in ("result", "reading", "both"):
    raise ImproperlyConfigured(
        f"CXR_PACS_SEND_ON must be result, reading or both, not {CXR_PACS_SEND_ON!r}"
    )
# Our AE title as the C-STORE caller (the PACS must know it): the SCP's by default.
CXR_PACS_CALLING_AE = env_ae_title("CXR_PACS_CALLING_AE", CXR_DICOM_AE_TITLE)
# Tries per object before it is marked failed; waits between them grow from CXR_PACS_RETRY_S
# (doubling, at most an hour); each try waits at most CXR_PACS_TIMEOUT_S for the PACS.
CXR_PACS_MAX_ATTEMPTS = env_positive_int("CXR_PACS_MAX_ATTEMPTS", 8)
CXR_PACS_RETRY_S = env_float("CXR_PACS_RETRY_S", 30.0, minimum=0)
CXR_PACS_TIMEOUT_S = env_float("CXR_PACS_TIMEOUT_S", 30.0, minimum=1)
