"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright from PyPI;
`make test` installs the browser when it is missing). No `playwright install`: the browser
is the system's. A missing browser fails the tests, it does not skip them.

Each module gets one browser and one `web` process (the Procfile's gunicorn) with a real
Celery worker in process, so assignments happen as in production.
"""

from __future__ import annotations

import os
import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.support.browser import TIMEOUT_MS, WEB_ENV, Api
from tests.support.live_server import live_server_fixture

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser():
    path = shutil.which(CHROMIUM) or CHROMIUM
    assert os.path.exists(path), f"{CHROMIUM} is missing: `make test` installs it (apt chromium)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield chromium
        chromium.close()


# The web process for the module's tests.
live = live_server_fixture(**WEB_ENV)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
def api(live):
    return Api(live)
