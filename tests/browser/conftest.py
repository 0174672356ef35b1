from __future__ import annotations

import os
import shutil

CHROMIUM = os.environ.get("CXR_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# The browser, page and artifacts_dir fixtures live in tests/conftest.py: one browser per test
# session, shared with the browser tests outside this folder (tests/security).


def sign_in(page, live_server, username: str, password: str = "correct horse battery") -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def xray_files(tmp_path, *seeds: int, width: int = 400, height: int = 360) -> list[str]:
    """Synthetic chest X-ray PNGs written under tmp_path (chest-SEED.png), for the file picker."""
    from tests import imagegen

    paths = []
    for seed in seeds:
        path = tmp_path / f"chest-{seed}.png"
        path.write_bytes(imagegen.png_bytes(imagegen.make_xray(width, height, seed=seed)))
        paths.append(str(path))
    return paths
