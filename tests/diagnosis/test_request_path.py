"""The web process never imports torch: uploads, pages and the API stay light and fork-safe."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, sys, tempfile
    os.environ["DJANGO_SETTINGS_MODULE"] = "cxrweb.settings"
    os.environ["DATABASE_URL"] = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "db.sqlite3")
    os.environ["MEDIA_ROOT"] = tempfile.mkdtemp()
    os.environ["STATIC_ROOT"] = tempfile.mkdtemp()
    import django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    call_command("collectstatic", verbosity=0, interactive=False)
    from django.contrib.auth.models import Group, User
    from django.test import Client
    from django.core.files.uploadedfile import SimpleUploadedFile
    from tests import imagegen

    user = User.objects.create_user("r", password="pw-long-enough-1")
    user.groups.add(Group.objects.get(name="radiologist"))
    client = Client()
    client.force_login(user)
    resp = client.post("/studies/upload/", {
        "image": SimpleUploadedFile("a.dcm", imagegen.dicom_bytes()), "patient_id": "P1"})
    assert resp.status_code == 302, resp.status_code
    for url in (resp["Location"], "/", "/studies/upload/", "/api/v1/predictions/1/",
                resp["Location"] + "results/", "/images/1/display.png"):
        assert client.get(url).status_code == 200, url
    import cxrweb.urls, diagnosis.admin, training.admin  # noqa: F401  everything the web loads
    bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "cv2"))
    print("HEAVY:", bad[:5])
    sys.exit(1 if bad else 0)
    """
)


def test_the_web_request_path_never_imports_torch():
    env = {**os.environ, "SECRET_KEY": "x", "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "HEAVY: []" in proc.stdout
