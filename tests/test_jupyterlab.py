"""A course notebook run in JupyterLab, in a real browser: Chromium driven by Playwright.

Runs notebook 00 in the tiny profile through JupyterLab's own "Run All Cells", as a student would,
and checks that every cell finished without an error and that the figures rendered. Screenshots go
to build/screenshots/. Needs a Chromium on the machine (`.ci/run` installs Debian's `chromium`;
Playwright's own browser downloads are not used, so that the test runs offline).
"""
import os
import subprocess
import sys
import time
import urllib.request

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat (the notebook runner) is not installed here")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed here")

from conftest import CHROMIUM, free_port, needs_chromium, set_to_the_tiny_profile  # noqa: E402
from dyninf.tools.runner import notebooks_in_order  # noqa: E402
from dyninf.utils.paths import build_dir  # noqa: E402

pytestmark = [pytest.mark.notebook, needs_chromium]
RUN_ALL_SECONDS = 240   # notebook 00 in the tiny profile takes about half a minute on 2 cores


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on a free localhost port, serving ``tmp_path``; its URL and token."""
    port, token = free_port(), "course-browser-test"
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.root_dir={tmp_path}", f"--IdentityProvider.token={token}",
         "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],   # CI containers run as root
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MPLBACKEND": "Agg"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "jupyterlab.log").read_text()
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start in a minute:\n" + (tmp_path / "jupyterlab.log").read_text())
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.mark.browser
def test_notebook_00_runs_in_jupyterlab_in_chromium_with_no_error_and_its_figures_shown(jupyterlab, tmp_path):
    assert CHROMIUM, "no Chromium found: install Debian's chromium or set CHROMIUM"
    url, token = jupyterlab
    notebook = notebooks_in_order()[0]
    nb = nbformat.read(notebook, as_version=4)
    set_to_the_tiny_profile(nb)
    nbformat.write(nb, tmp_path / notebook.name)
    code_cells = sum(cell.cell_type == "code" for cell in nb.cells)
    screenshots = build_dir() / "screenshots"
    screenshots.mkdir(parents=True, exist_ok=True)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/{notebook.name}?token={token}")
            # ready when every code cell is rendered and a kernel is connected: the panel first shows one
            # empty placeholder cell and "No Kernel", and Run All clicked then runs nothing (seen in CI)
            page.wait_for_function(
                """expected => document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length === expected
                    && [...document.querySelectorAll('.jp-Toolbar-kernelName')].some(
                        name => name.textContent.trim() && !/No Kernel/.test(name.textContent))""",
                arg=code_cells, timeout=120_000, polling=500)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)
            no_news = page.get_by_role("button", name="No", exact=True)   # "get notified about Jupyter news?"
            if no_news.is_visible():
                no_news.click()
            page.screenshot(path=str(screenshots / "00-opened.png"))
            # Run > Run All Cells, through the menu as a student would
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            # done when every code cell has an execution count and the kernel is idle again
            page.wait_for_function(
                """expected => {
                    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                    return prompts.length === expected && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                }""", arg=code_cells, timeout=RUN_ALL_SECONDS * 1000, polling=1000)
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            error_texts = [errors.nth(i).inner_text()[:500] for i in range(errors.count())]
            images = page.locator(".jp-RenderedImage img")
            image_count = images.count()
            rendered = [images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0") for i in range(image_count)]
            for i in range(min(image_count, 3)):   # the first figures, each with its cell, as rendered
                cell = page.locator(".jp-CodeCell:has(.jp-RenderedImage img)").nth(i)
                cell.scroll_into_view_if_needed()
                page.wait_for_timeout(300)   # let the scrolled-to cells paint
                cell.screenshot(path=str(screenshots / f"00-figure-{i + 1}.png"))
            page.screenshot(path=str(screenshots / "00-ran.png"))
        finally:
            browser.close()

    assert not error_texts, f"error output in JupyterLab: {error_texts}"
    assert image_count >= 2 and all(rendered), f"{image_count} figures, rendered: {rendered}"
    assert all((screenshots / f"00-figure-{i + 1}.png").stat().st_size > 10_000 for i in range(min(image_count, 3)))
