"""The course's website (make site): its links, the pages it stages, the learner's edition, which
must hold no solution, hidden check or model answer, and both editions built from a run of the tiny
course and read in Chromium (driven by Playwright, as the JupyterLab test does)."""
import functools
import hashlib
import http.server
import json
import re
import shutil
import threading
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat (the notebook runner) is not installed here")

from conftest import CHROMIUM, free_port, needs_chromium  # noqa: E402
from dyninf.tools.classroom import HIDDEN_TEST_MARKERS, SOLUTION_MARKERS  # noqa: E402
from dyninf.tools.report import render_report  # noqa: E402
from dyninf.tools.runner import notebooks_in_order  # noqa: E402
from dyninf.tools.website import (NoCourseRunError, learner_notebook, localize_links, notebook_title,  # noqa: E402
                                  read_run, readme_section, repository_source, shown_source_outputs,
                                  with_run_banner)
from dyninf.utils.io import folder_lock  # noqa: E402
from dyninf.utils.paths import build_dir, course_root  # noqa: E402

PAGES = {"README.md": "index.md", "results/README.md": "results/README.md",
         "notebooks/00_resnet_baseline.ipynb": "notebooks/00_resnet_baseline.ipynb"}


def test_links_point_at_the_sites_copies_and_files_it_does_not_hold_become_their_text():
    text = ("[results](results/README.md#test-times), [code](lib/dyninf/network/cost.py), "
            "[paper](https://arxiv.org/abs/1512.03385), [here](#a-section), ![plot](missing.png)")
    assert localize_links(text, "README.md", PAGES) == (
        "[results](results/README.md#test-times), code, [paper](https://arxiv.org/abs/1512.03385), "
        "[here](#a-section), ")
    # from results/README.md, the README is the home page, one folder up
    assert localize_links("[README](../README.md)", "results/README.md", PAGES) == "[README](../index.md)"
    assert localize_links("[00](../notebooks/00_resnet_baseline.ipynb)", "results/README.md", PAGES) == \
        "[00](../notebooks/00_resnet_baseline.ipynb)"


def test_with_a_repository_files_the_site_does_not_hold_link_to_its_copy_at_the_runs_commit():
    source = repository_source("https://github.com/o/course/", "abc1234-dirty")
    assert source == "https://github.com/o/course/{kind}/abc1234/"
    assert repository_source("https://github.com/o/course", "unknown (not a git checkout)") == \
        "https://github.com/o/course/{kind}/HEAD/"
    assert repository_source(None, "abc1234") is None
    text = ("[code](../lib/dyninf/network/cost.py), `lib/dyninf/deciders/aig.py`, `lib/`, `build/student/`, "
            "`results/README.md`, [instructors](../README.md#for-instructors)\n```\n`lib/dyninf`\n```\n")
    pages = {**PAGES, "README.md#for-instructors": "instructors.md"}
    assert localize_links(text, "notebooks/00_resnet_baseline.ipynb", pages, source) == (
        "[code](https://github.com/o/course/blob/abc1234/lib/dyninf/network/cost.py), "
        "[`lib/dyninf/deciders/aig.py`](https://github.com/o/course/blob/abc1234/lib/dyninf/deciders/aig.py), "
        "[`lib/`](https://github.com/o/course/tree/abc1234/lib), `build/student/`, "
        "[`results/README.md`](../results/README.md), [instructors](../instructors.md)\n```\n`lib/dyninf`\n```\n")
    # build/ is no repository file; a file the site holds links to its page, without a repository too; code is code
    assert localize_links("`results/` and `lib/`", "README.md", PAGES) == "[`results/`](results/README.md) and `lib/`"


def test_a_readme_section_runs_to_the_next_heading_of_its_level():
    readme = "# T\n\n## A\n\none\n\n### A.1\n\ntwo\n\n## B\n\nthree\n"
    assert readme_section(readme, "A") == "\none\n\n### A.1\n\ntwo\n".strip("\n")
    assert readme_section(readme, "B") == "\nthree".strip("\n")
    with pytest.raises(ValueError, match="no section headed 'C'"):
        readme_section(readme, "C")


def _between(source: str, markers: tuple[str, str]) -> list[str]:
    lines, inside = [], False
    for line in source.splitlines():
        if line.strip().startswith(markers[0]):
            inside = True
        elif line.strip().startswith(markers[1]):
            inside = False
        elif inside and len(line.strip()) > 12:
            lines.append(line.strip())
    return lines


@pytest.mark.parametrize("notebook", notebooks_in_order(), ids=lambda p: p.stem)
def test_the_learners_notebook_holds_no_solution_hidden_check_model_answer_or_library_answer(notebook):
    instructor = nbformat.read(notebook, as_version=4)
    for cell in instructor.cells:   # an executed copy's outputs, which a solution's output must not keep
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="answer: 42\n")]
    learner = learner_notebook(instructor)
    text = "\n".join(cell.source for cell in learner.cells)
    secrets = []
    for cell in instructor.cells:
        grading = cell.metadata.get("nbgrader", {})
        secrets += _between(cell.source, SOLUTION_MARKERS) + _between(cell.source, HIDDEN_TEST_MARKERS)
        if cell.cell_type == "markdown" and grading.get("solution"):   # a model answer
            secrets += [line.strip() for line in cell.source.splitlines() if len(line.strip()) > 12]
        if "student_copy" in cell.metadata:   # the library's implementation of a task's answer
            secrets += [line.strip() for line in cell.source.splitlines() if len(line.strip()) > 12
                        and line.strip() not in cell.metadata["student_copy"]["source"]]
    leaked = [line for line in secrets if line in text and line not in _task_statements(instructor)]
    assert secrets and not leaked, f"{notebook.name}: the learner's page shows {leaked[:3]}"
    for cell in learner.cells:
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (grading.get("solution") or grading.get("grade")):
            assert not cell.outputs, f"{notebook.name}: a graded cell keeps its output"
    assert "raise NotImplementedError()" in text and "YOUR ANSWER HERE" in text


def _task_statements(nb) -> set[str]:
    """Lines that the notebook also shows outside any answer (a task's statement may quote them)."""
    return {line.strip() for cell in nb.cells if not cell.metadata.get("nbgrader", {}).get("solution")
            and "student_copy" not in cell.metadata
            for line in re.split(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", cell.source, flags=re.S)[0].splitlines()}


def test_a_students_show_source_cell_shows_on_the_learners_page_only_the_code_it_names():
    from dyninf.course.display import source_markdown
    from dyninf.deciders import target_rate_loss
    from dyninf.deciders.aig import AIGGates, Gate

    shown = source_markdown(Gate.forward, AIGGates.forward, target_rate_loss)   # the instructor's cell
    outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": shown, "text/plain": "<Markdown>"})]
    kept = shown_source_outputs("show_source(Gate.forward)\n", outputs)
    assert [output["data"]["text/markdown"] for output in kept] == [source_markdown(Gate.forward)]
    assert shown_source_outputs("show_source(target_rate_loss, Gate.forward)", outputs)[0]["data"]["text/markdown"] \
        == source_markdown(Gate.forward, target_rate_loss)   # in the instructor's order
    assert shown_source_outputs("x = target_rate_loss\nshow_source(x)", outputs) == []   # not only a show_source call
    assert shown_source_outputs("def answer(:", outputs) == []


def test_the_run_banner_comes_under_the_notebooks_title_with_fixed_cell_ids():
    new = nbformat.v4
    nb = with_run_banner(new.new_notebook(cells=[new.new_markdown_cell("# 00 · Title\n\nThe intro.", id="cell-00"),
                                             new.new_code_cell("1")]), "BANNER")
    assert [(cell.source, cell.id) for cell in nb.cells[:3]] == [
        ("# 00 · Title", "cell-00"), ("BANNER", "course-run"), ("The intro.", "cell-00-intro")]
    untitled = with_run_banner(new.new_notebook(cells=[new.new_code_cell("1")]), "BANNER")
    assert [cell.source for cell in untitled.cells] == ["BANNER", "1"]
    nbformat.validate(nb)


def test_the_reports_page_links_the_notebook_pages_without_an_html_column():
    runs = [{"notebook": "00_resnet_baseline", "status": "ok", "seconds": 3.0, "executed": "notebooks/00.ipynb",
             "metrics": None}]
    page = render_report(runs, html_column=False)
    assert "| notebook | status | time | executed |\n" in page and "[page](notebooks/00.ipynb) |\n" in page
    assert "html" not in page.lower().replace("executed", "")


def test_a_folder_without_a_course_run_is_one_error_naming_what_was_expected(tmp_path):
    with pytest.raises(NoCourseRunError, match="expected its course.json, which `make course`"):
        read_run(tmp_path)
    (tmp_path / "course.json").write_text(json.dumps({"profile": "tiny", "notebooks": []}))
    with pytest.raises(NoCourseRunError, match="records no notebook run"):
        read_run(tmp_path)


def test_both_editions_build_from_a_run_and_only_the_instructors_shows_solutions(tmp_path):
    pytest.importorskip("sphinx", reason="the site's packages are not installed (make site installs them)")
    from dyninf.tools.website import build_site

    run = tmp_path / "run"
    run.mkdir()
    notebooks = notebooks_in_order()
    for notebook in notebooks:
        shutil.copy(notebook, run / notebook.name)
    (run / "course.json").write_text(json.dumps({
        "profile": "tiny", "seed": 0, "device": "CPU (test)", "torch": "2", "finished": "2026-12-03T10:00:00+00:00",
        "commit": "abc1234", "notebooks": [{"notebook": n.stem, "status": "ok", "seconds": 1.0, "error": "",
                                            "device": "CPU (test)"} for n in notebooks]}))
    learner, instructor = build_site(run, tmp_path / "site", repository="https://github.com/example/course")
    assert sorted(path.name for path in (tmp_path / "site").iterdir()) == [".lock", "instructor", "learner"]
    assert "git clone https://github.com/example/course" in re.sub(r"<[^>]+>", "", (learner / "index.html").read_text())
    # the learner's page links the notebook as handed out: no outputs, no solution
    page = (learner / "notebooks" / "00_resnet_baseline.html").read_text()
    download = re.search(r'href="(\.\./_downloads/\w+/00_resnet_baseline\.ipynb)"', page)
    assert download, "the learner's 00 does not link its notebook to download"
    handed_out = nbformat.read(learner / "notebooks" / download[1], as_version=4)
    assert not any(cell.get("outputs") for cell in handed_out.cells) and "raise NotImplementedError()" in \
        "\n".join(cell.source for cell in handed_out.cells)
    assert not list(instructor.glob("_downloads/*/*.ipynb")), "the instructor's edition offers the learner's copies"
    assert 'href="../instructors.html"' in (instructor / "notebooks" / "00_resnet_baseline.html").read_text()
    solution = _between(nbformat.read(notebooks[0], as_version=4).cells[
        next(i for i, c in enumerate(nbformat.read(notebooks[0], as_version=4).cells)
             if SOLUTION_MARKERS[0] in c.source)].source, SOLUTION_MARKERS)[0]

    def site_text(folder):
        return "\n".join(p.read_text(errors="ignore") for p in folder.rglob("*")
                         if p.is_file() and p.suffix in {".html", ".js", ".txt", ".ipynb"} and "_static" not in p.parts)
    assert solution not in site_text(learner) and solution in site_text(instructor)
    page = (learner / "notebooks" / "00_resnet_baseline.html").read_text()
    assert "commit <code" in page and "abc1234" in page and "CPU (test)" in page
    for folder in (learner, instructor):
        for html in folder.rglob("*.html"):
            assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', html.read_text()), \
                f"{html} loads something from another host"


def test_a_build_that_fails_half_way_leaves_the_last_site_as_it_was_and_no_staging_folder(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sphinx", reason="the site's packages are not installed (make site installs them)")
    from dyninf.tools import website

    run = tmp_path / "run"
    run.mkdir()
    notebook = notebooks_in_order()[0]
    shutil.copy(notebook, run / notebook.name)
    (run / "course.json").write_text(json.dumps({"profile": "tiny", "notebooks": [
        {"notebook": notebook.stem, "status": "ok", "seconds": 1.0}]}))
    site = tmp_path / "site"
    assert website.main(["--build", str(run), "--out", str(site), "--edition", "learner"]) == 0
    before = (site / "learner" / "index.html").read_text()
    from sphinx.builders.html import StandaloneHTMLBuilder

    write_page, written = StandaloneHTMLBuilder.write_doc, []

    def disk_full_after_one_page(builder, docname, doctree):   # the disk fills while Sphinx writes the pages
        if written:
            raise OSError(28, "No space left on device")
        written.append(docname)
        write_page(builder, docname, doctree)
    monkeypatch.setattr(StandaloneHTMLBuilder, "write_doc", disk_full_after_one_page)
    assert website.main(["--build", str(run), "--out", str(site), "--edition", "learner"]) == 1
    assert "No space left on device; the last one there is unchanged" in capsys.readouterr().err
    assert written and (site / "learner" / "index.html").read_text() == before
    assert sorted(path.name for path in site.iterdir()) == [".lock", "learner"]

# --- both editions from a run of the tiny course, and read in Chromium ----------------------------

def _sources_fingerprint() -> str:
    """A hash of everything a site's pages come from: the notebooks, the library, the site's
    configuration, the README and results/ (a site built from other sources is rebuilt)."""
    root = course_root()
    files = [root / "README.md", root / "requirements-site.txt",
             *(path for folder in ("notebooks", "website", "lib/dyninf", "results")
               for path in (root / folder).rglob("*") if path.is_file() and "__pycache__" not in path.parts)]
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def tiny_course_site() -> tuple:
    """The six notebooks run in the tiny profile into build/test-site/course (as `make course
    PROFILE=tiny` runs them) and both editions of its site built by `make site`'s command into
    build/test-site/site; reused while their sources are unchanged (the browser test, which `make
    test` runs after the parallel run, reads the site that the parallel run built). Its course and
    site folders, and whether the course ran without a failure."""
    from dyninf.tools import website
    from dyninf.tools.runner import run_course

    root = build_dir() / "test-site"
    course, site, stamp = root / "course", root / "site", root / "fingerprint"
    fingerprint = _sources_fingerprint()
    with folder_lock(root, "building the test site"):
        if not stamp.is_file() or stamp.read_text() != fingerprint:
            stamp.unlink(missing_ok=True)
            shutil.rmtree(course, ignore_errors=True)
            ok = run_course("tiny", course)
            assert website.main(["--build", str(course), "--out", str(site)]) == 0
            if ok:   # a failed run is run again next time
                stamp.write_text(fingerprint)
    return course, site, stamp.is_file()


@pytest.mark.notebook
def test_make_site_builds_both_editions_from_the_tiny_courses_run_each_page_naming_that_run():
    pytest.importorskip("sphinx", reason="the site's packages are not installed (make site installs them)")
    course, site, ran = tiny_course_site()
    assert ran, (course / "REPORT.md").read_text()
    record = json.loads((course / "course.json").read_text())
    assert record["device"].startswith("CPU") and record["commit"] != "unknown"
    for edition in ("learner", "instructor"):
        pages = {path.stem for path in (site / edition / "notebooks").glob("*.html")}
        assert pages == {notebook.stem for notebook in notebooks_in_order()}
        for page in (site / edition).rglob("*.html"):
            if page.name not in ("search.html", "genindex.html") and "_static" not in page.parts:
                text = page.read_text()
                assert re.search(r"The runs? shown here", text) and record["commit"] in text, page
                assert '<code class="docutils literal notranslate"><span class="pre">tiny</span></code> profile' in text, page


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):   # not one line per request into the test's output
        pass


@pytest.fixture
def served_site():
    """Both editions of the tiny course's site served on a free localhost port: its base URL."""
    pytest.importorskip("sphinx", reason="the site's packages are not installed (make site installs them)")
    _, site, ran = tiny_course_site()
    assert ran, "the tiny course failed: see build/test-site/course/REPORT.md"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


# TeX that MathJax leaves in the text when it has not rendered it: $...$, \(...\), or a command
RAW_TEX = re.compile(r"\$[^$\n]+\$|\\\(|\\\[|\\(frac|sum|mathbb|mathrm|mathcal|sigma|lambda|cdot|left|right|begin|hat|tilde)\b")
RAW_TABLE = re.compile(r"\|\s*[-—–]+\s*\|")   # a table's |---| row, as text (CommonMark, say, has no tables)
PAGE_STATE = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    const main = document.querySelector('main').cloneNode(true);
    main.querySelectorAll('pre, code, mjx-container, script, style').forEach(node => node.remove());
    return {
        title: document.title,
        images: [...document.images].map(img => ({src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0})),
        maths: document.querySelectorAll('main mjx-container').length,
        mathErrors: document.querySelectorAll('mjx-merror').length,
        prose: main.innerText,
        text: document.querySelector('main').innerText,
        next: document.querySelector('a.right-next')?.getAttribute('href') ?? null,
    };
}"""


def _solution_lines() -> dict[str, list[str]]:
    """Each notebook's solution lines (between the solution markers), but those its tasks also show."""
    lines = {}
    for notebook in notebooks_in_order():
        nb = nbformat.read(notebook, as_version=4)
        shown = _task_statements(nb)
        lines[notebook.stem] = [line for cell in nb.cells for line in _between(cell.source, SOLUTION_MARKERS)
                                if line not in shown]
    return lines


@pytest.mark.browser
@needs_chromium
def test_the_learners_site_in_chromium_notebook_to_notebook_with_figures_maths_search_and_nothing_off_localhost(served_site):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed here")
    assert CHROMIUM, "no Chromium found: install Debian's chromium or set CHROMIUM"
    started = time.monotonic()
    learner = f"{served_site}/learner/"
    screenshots = build_dir() / "screenshots"
    screenshots.mkdir(parents=True, exist_ok=True)
    off_localhost, console_errors, failed = [], [], []
    visited = []   # (path under the edition, the page's state)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda request: request.url.startswith((served_site, "data:", "blob:"))
                or off_localhost.append(request.url))
        page.on("console", lambda message: message.type == "error" and console_errors.append(f"{page.url}: {message.text}"))
        page.on("pageerror", lambda error: console_errors.append(f"{page.url}: {error}"))
        page.on("response", lambda response: response.status >= 400 and failed.append(f"{response.status} {response.url}"))
        try:
            page.goto(learner + "index.html", wait_until="load")
            visited.append(("index.html", page.evaluate(PAGE_STATE)))
            page.screenshot(path=str(screenshots / "site-home.png"))
            # the reader's way through: "next" at the foot of each page, from the home page to the report
            while not visited[-1][0].endswith("report.html") and len(visited) < 12:
                page.locator("a.right-next").click()
                page.wait_for_load_state("load")
                visited.append((page.url.removeprefix(learner).split("#")[0], page.evaluate(PAGE_STATE)))
                if visited[-1][0] == "notebooks/00_resnet_baseline.html":   # its first figure, with its text
                    page.locator("main img").first.evaluate("img => img.scrollIntoView({block: 'center'})")
                    page.screenshot(path=str(screenshots / "site-00-figure.png"))
                elif visited[-1][0] == "notebooks/02_convnet_aig.html":   # how a notebook's page opens
                    page.screenshot(path=str(screenshots / "site-02.png"))
                    with page.expect_download() as download:   # the banner's copy to solve the tasks in
                        page.locator(".course-run a.download").click()
                    handed_out = nbformat.read(download.value.path(), as_version=4)
            # Sphinx's search, from its page's search box: "Gumbel" finds notebook 02 (ConvNet-AIG's gates)
            page.goto(learner + "search.html", wait_until="load")
            page.locator("form.bd-search input[name=q]").last.fill("Gumbel")
            page.keyboard.press("Enter")
            found = page.locator("ul.search li a[href*='02_convnet_aig']").first
            found.wait_for(timeout=30_000)
            found.click()
            page.wait_for_load_state("load")
            searched_to = page.url.removeprefix(learner)
            # the same task in the instructor's edition shows its solution (what the learner's must not)
            page.goto(f"{served_site}/instructor/notebooks/00_resnet_baseline.html", wait_until="load")
            instructor_text = page.evaluate(PAGE_STATE)["text"]
        finally:
            browser.close()
    seconds = time.monotonic() - started

    paths = [path for path, _ in visited]
    assert paths == ["index.html", *(f"notebooks/{n.stem}.html" for n in notebooks_in_order()), "report.html"], paths
    for path, state in visited:
        assert all(image["loaded"] for image in state["images"]), f"{path}: images not loaded: {state['images']}"
        assert not RAW_TEX.search(state["prose"]), f"{path}: maths left as TeX: {RAW_TEX.search(state['prose'])[0]!r}"
        assert not RAW_TABLE.search(state["prose"]), f"{path}: a Markdown table left as text"
        assert state["mathErrors"] == 0, f"{path}: MathJax could not render {state['mathErrors']} formulas"
    notebook_states = [state for path, state in visited if path.startswith("notebooks/")]
    assert all(len(state["images"]) >= 1 for state in notebook_states), [len(s["images"]) for s in notebook_states]
    assert sum(state["maths"] for state in notebook_states) >= 20, "few formulas rendered: is MathJax loading?"
    assert searched_to.startswith("notebooks/02_convnet_aig.html"), searched_to
    assert notebook_title(handed_out, "") == "02 · ConvNet-AIG: a gate before every block decides, per image, whether to run it"
    assert not any(cell.get("outputs") for cell in handed_out.cells), "the notebook to download keeps outputs"
    assert not off_localhost, f"requests left localhost: {off_localhost[:5]}"
    assert not console_errors and not failed, (console_errors + failed)[:5]
    solutions = _solution_lines()
    for path, state in visited:
        if path.startswith("notebooks/"):
            leaked = [line for line in solutions[path[10:-5]] if line in state["text"]]
            assert not leaked, f"the learner's {path} shows solution lines: {leaked[:3]}"
    assert any(line in instructor_text for line in solutions["00_resnet_baseline"]), \
        "the instructor's 00 shows no solution line: the learner's check above could not fail"
    assert all((screenshots / f"site-{name}.png").stat().st_size > 20_000 for name in ("home", "00-figure", "02"))
    print(f"the site read in Chromium in {seconds:.0f} s")
