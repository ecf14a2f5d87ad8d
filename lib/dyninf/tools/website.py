"""The course as a website, built from an executed course without running anything again (make site).

    python -m dyninf.tools.website --build build --out build/site [--edition learner|instructor]

reads a finished ``make course`` folder (``course.json``, the executed notebooks, their metrics)
and builds, with Sphinx and myst-nb (configured in ``website/conf.py``), two editions into
``<out>/learner/`` and ``<out>/instructor/``: a home page (the course, the path through it, times
per profile and device, running it, from the README), a page per notebook with its outputs,
the run's report, the reference results under ``results/``, and the README's part for
instructors. In the learner's edition each graded task shows its task and visible checks, not its
solution, hidden checks or model answer (nbgrader's own preprocessors remove them, as for
``make student``). Every page says which run it shows. Each edition is built beside its folder and
renamed into place, so that no half-built site is ever left where a reader looks.
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dyninf.tools.classroom import STUDENT_COPY, as_handed_out
from dyninf.tools.report import render_report, run_metrics
from dyninf.utils.io import folder_lock
from dyninf.utils.paths import build_dir, course_commit, course_root, shown_path

EDITIONS = ("learner", "instructor")
RESULT_FILES = ("*.md", "*.png", "*.svg", "*.json", "*.txt", "*.csv")   # what results/ holds for readers


class NoCourseRunError(ValueError):
    """The folder given holds no executed course to show."""


@dataclass(frozen=True)
class CourseRun:
    """What a ``make course`` folder records of its run (``course.json``); ``unknown`` where a run
    made before the runner recorded it lacks a field."""
    folder: Path
    profile: str
    seed: int
    device: str
    torch: str
    finished: str
    commit: str
    notebooks: tuple[dict, ...]

    @property
    def date(self) -> str:
        return self.finished[:10] if self.finished != "unknown" else "unknown"


def read_run(build: Path) -> CourseRun:
    build = Path(build)
    record_file = build / "course.json"
    if not record_file.is_file():
        raise NoCourseRunError(f"no executed course in {build}: expected its course.json, which "
                               f"`make course` (python -m dyninf.tools.runner --out {build}) writes")
    record = json.loads(record_file.read_text())
    notebooks = tuple(record.get("notebooks", []))
    if not notebooks:
        raise NoCourseRunError(f"{record_file} records no notebook run")
    return CourseRun(build, record["profile"], record.get("seed", 0), record.get("device") or "unknown",
                     record.get("torch") or "unknown", record.get("finished", "unknown"),
                     record.get("commit", "unknown"), notebooks)


# --- the learner's notebooks ---------------------------------------------------------------------

def learner_notebook(nb):
    """An executed instructor's notebook ``nb`` (nbformat) as a learner may read it: every cell
    handed out as its student version says, each graded task's solution replaced by nbgrader's
    stub, hidden checks and model answers removed, and the outputs of those cells cleared (a
    solution's output can show the answer)."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    shown_source = {cell.get("id"): shown_source_outputs(cell.metadata[STUDENT_COPY]["source"], cell.get("outputs", []))
                    for cell in nb.cells if cell.metadata.get(STUDENT_COPY, {}).get("cell_type") == "code"}
    nb = as_handed_out(nb)
    for cell in nb.cells:
        if cell.get("id") in shown_source:
            cell.outputs = shown_source[cell.get("id")]
    nb, _ = ClearSolutions().preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    for cell in nb.cells:
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (grading.get("solution") or grading.get("grade")):
            cell.outputs, cell.execution_count = [], None
    return nb


_SOURCE_HEADING = re.compile(r"`([\w.]+)` in `")   # how show_source heads each object's code


def shown_source_outputs(student_source: str, outputs: list) -> list:
    """What a student's cell that only shows library code (``show_source(a, b.c)``) displays, taken
    from the instructor's run of a cell that showed more (``show_source`` writes one block per object,
    headed by its qualified name): those blocks whose name the call names. Nothing for any other cell
    (its output would be the instructor's code's, not the student's)."""
    import nbformat

    try:
        call = ast.parse(student_source).body
    except SyntaxError:
        return []
    if not (len(call) == 1 and isinstance(call[0], ast.Expr) and isinstance(call[0].value, ast.Call)
            and ast.unparse(call[0].value.func) == "show_source"):
        return []
    named = [ast.unparse(argument) for argument in call[0].value.args]
    kept = []
    for output in outputs:
        markdown = output.get("data", {}).get("text/markdown")
        if output.get("output_type") != "display_data" or markdown is None:
            continue
        blocks = re.split(r"\n\n(?=`[\w.]+` in `)", "".join(markdown))   # before each heading
        shown = [block for block, heading in ((block, _SOURCE_HEADING.match(block)) for block in blocks)
                 if heading and any(f".{name}".endswith(f".{heading[1]}") for name in named)]
        if shown:
            kept.append(nbformat.v4.new_output("display_data", data={"text/markdown": "\n\n".join(shown),
                                                                     "text/plain": "<IPython.core.display.Markdown object>"}))
    return kept


def learner_download(nb):
    """The course's notebook ``nb`` (nbformat, as in notebooks/) as a learner downloads it from the
    learner's edition to solve its tasks: handed out as ``learner_notebook`` makes it, no outputs."""
    nb = learner_notebook(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


# --- pages ---------------------------------------------------------------------------------------

def run_banner(run: CourseRun, edition: str, entry: dict | None = None) -> str:
    """The note at the top of every page: which run it shows, and what the edition leaves out."""
    if entry is None:
        shown = (f"This site shows one run of the course: the `{run.profile}` profile on {run.device}, "
                 f"finished {run.date}, at commit `{run.commit}` (PyTorch {run.torch}, training seed {run.seed}).")
    else:
        took = f"{entry['seconds']:.0f} s" if "seconds" in entry else "an unrecorded time"
        status = ("" if entry.get("status") == "ok" else
                  f" **It failed in this run:** {entry.get('error') or 'no reason recorded'}; "
                  f"the page shows the outputs up to there.")
        shown = (f"This page shows the `{run.profile}` profile's run on {entry.get('device') or run.device}, "
                 f"finished {run.date}, at commit `{run.commit}`; this notebook took {took}.{status}")
    if edition == "instructor":
        edition_text = ("Instructor's edition: solutions, hidden checks and model answers are shown. "
                        "Give a class the learner's edition.")
    else:
        edition_text = ("Learner's edition: each graded task shows its task and its visible checks, not its "
                        "solution, hidden checks or model answer.")
        edition_text += (" Each notebook's page offers its copy to download and solve." if entry is None else
                         f" To solve them, download {{download}}`this notebook as handed out </downloads/{entry['notebook']}.ipynb>` "
                         f"(no outputs) and run it in the course's checkout ([Running it yourself](../index.md#running-it-yourself)).")
    return f"```{{admonition}} The run shown here\n:class: course-run\n{shown} {edition_text}\n```\n"


def reference_banner(run: CourseRun, path: str) -> str:
    """The note at the top of a page of the reference results: they come from the runs they name,
    kept in the checkout, not from the run that the rest of the site shows."""
    return (f"```{{admonition}} The runs shown here\n:class: course-run\n"
            f"This page is `{path}` of the checkout at commit `{course_commit()}`: reference results, from the runs "
            f"it describes, not from the run that the notebook pages show "
            f"(the `{run.profile}` profile on {run.device}, finished {run.date}).\n```\n")


def with_run_banner(nb, banner: str):
    """``nb`` with ``banner`` under its title (in a cell of its own, so that the page still opens
    with the notebook's title), or first where the notebook has no title."""
    import nbformat

    first = nb.cells[0] if nb.cells else None
    at = 0
    if first is not None and first.cell_type == "markdown" and first.source.startswith("# "):
        title, _, rest = first.source.partition("\n")
        first.source = title
        if rest.strip():
            nb.cells.insert(1, nbformat.v4.new_markdown_cell(rest.lstrip("\n"), id=f"{first.get('id', 'title')}-intro"[:64]))
        at = 1
    # fixed ids: a rebuilt page's notebook differs from the last only where the run does
    nb.cells.insert(at, nbformat.v4.new_markdown_cell(banner, id="course-run"))
    return nb


_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
# a file or folder of the checkout named in code, such as `lib/dyninf/network/cost.py` (not already a link's text)
_NAMED_FILE = re.compile(r"(?<!\[)`((?:[\w.-]+/)+[\w.-]*|[\w-]+\.(?:py|md|txt|toml|yml|json|ipynb)|Makefile)`(?!\]\()")


def localize_links(markdown: str, page: str, pages: dict[str, str], source_url: str | None = None) -> str:
    """``markdown`` from the course file ``page`` (its path in the checkout) with each relative link
    pointed at the site: to the site's copy where ``pages`` (checkout path, or path#anchor of a section
    that is a page of its own -> site path) has one; else, for a file of the checkout that the site
    does not hold (the library's source), to the repository's copy (``source_url``, from
    ``repository_source``) or, without one, kept as its text (a reader finds it in the checkout)."""
    here = posixpath.dirname(page)
    site_here = posixpath.dirname(pages.get(page, page)) or "."

    def link(match: re.Match) -> str:
        image, text, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):   # another site, or an anchor of this page
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(here, path))
        if anchor and f"{resolved}#{anchor}" in pages:   # a section that is a page of its own on the site
            return f"{image}[{text}]({posixpath.relpath(pages[f'{resolved}#{anchor}'], site_here)})"
        if resolved in pages:
            relative = posixpath.relpath(pages[resolved], site_here)
            return f"{image}[{text}]({relative}{'#' + anchor if anchor else ''})"
        if source_url and not image and resolved in tracked_paths():   # in the course's repository
            return f"[{text}]({repository_url(resolved)}{'#' + anchor if anchor else ''})"
        return "" if image else text

    def repository_url(path: str) -> str:
        return source_url.format(kind="blob" if (course_root() / path).is_file() else "tree") + path

    def named_file(match: re.Match) -> str:
        """`results/gpu/`, `lib/dyninf/deciders/aig.py`: a link to the site's page (a folder's README), else
        to the repository's copy."""
        # named from the page's folder, or, as the course's text mostly names them, from the checkout's
        found = [path for path in (posixpath.normpath(posixpath.join(here, match.group(1))), posixpath.normpath(match.group(1)))
                 if path in tracked_paths()]
        if not found:
            return match.group(0)
        path = found[0]
        page_of = next((pages[key] for key in (path, f"{path}/README.md") if key in pages), None)
        if page_of is not None:
            return f"[{match.group(0)}]({posixpath.relpath(page_of, site_here)})"
        return f"[{match.group(0)}]({repository_url(path)})" if source_url else match.group(0)

    parts = re.split(r"(^```.*?^```)", markdown, flags=re.M | re.S)   # fenced code is left as it is
    for index in range(0, len(parts), 2):
        parts[index] = _NAMED_FILE.sub(named_file, _LINK.sub(link, parts[index]))
    return "".join(parts)


@functools.cache
def tracked_paths() -> frozenset[str]:
    """The files and folders of the course's repository (``git ls-files``; none outside a git checkout):
    what a link to the repository can point at (not build/ or runs/, which each machine makes)."""
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=course_root(), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return frozenset()
    files = listed.splitlines()
    folders = {"/".join(path.split("/")[:depth]) for path in files for depth in range(1, path.count("/") + 1)}
    return frozenset(files) | frozenset(folders)


def repository_source(repository: str | None, commit: str) -> str | None:
    """Where the site links the files it does not hold: ``repository`` (a GitHub-style web address),
    at the run's commit where ``commit`` names one (else its newest)."""
    if not repository:
        return None
    found = re.search(r"([0-9a-f]{7,40})(-dirty)?$", commit)
    return repository.rstrip("/") + "/{kind}/" + (found[1] if found else "HEAD") + "/"


def readme_section(readme: str, heading: str) -> str:
    """The README's section under the heading that starts with ``heading`` (``## ...``), down to the
    next heading of its level or above, without the heading line."""
    lines = readme.splitlines()
    for index, line in enumerate(lines):
        level = len(line) - len(line.lstrip("#"))
        if line.startswith("#") and line[level:].strip().startswith(heading):
            end = next((j for j in range(index + 1, len(lines)) if lines[j].startswith("#")
                        and len(lines[j]) - len(lines[j].lstrip("#")) <= level), len(lines))
            return "\n".join(lines[index + 1:end]).strip("\n")
    raise ValueError(f"the README has no section headed {heading!r}")


def _topics(readme: str) -> dict[str, str]:
    """Each notebook's topic, from the README's status table."""
    return {match.group(1): match.group(2).strip() for match in
            re.finditer(r"^\| `(\d\d_\w+)` \| ([^|]+) \|", readme_section(readme, "Status"), re.M)}


def notebook_title(nb, fallback: str) -> str:
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return fallback


def home_page(run: CourseRun, edition: str, titles: dict[str, str], readme: str, links, results: list[str],
              repository: str | None = None) -> str:
    """The home page; ``links(markdown, page)`` points a README part's links at the site."""
    intro = readme.split("\n## ", 1)[0].split("```", 2)[-1].strip()   # the README's words after its commands
    topics = _topics(readme)
    rows = ["| | notebook | what it covers | in this run |", "|---|---|---|---|"]
    for entry in run.notebooks:
        name = entry["notebook"]
        status = f"{entry['seconds']:.0f} s" if entry.get("status") == "ok" else f"**{entry.get('status')}**"
        rows.append(f"| {name[:2]} | [{titles.get(name, name)}](notebooks/{name}.ipynb) | "
                    f"{topics.get(name, '')} | {status} |")
    minutes = sum(entry.get("seconds", 0) for entry in run.notebooks) / 60
    toc_notebooks = "\n".join(f"notebooks/{entry['notebook']}" for entry in run.notebooks)
    toc_results = "\n".join(results)
    started = readme_section(readme, "Getting started")
    if repository:
        get_it = (f"The course is a repository: `git clone {repository}` (this site shows commit `{run.commit}`), "
                  f"then run the commands below in its folder.")
    else:
        get_it = ("The course is a repository: the commands below run in a checkout of it, which holds the files "
                  "that this site names but does not show (the library's source, `requirements.txt`, the Makefile).")
    if edition == "learner":
        get_it += (" Its `notebooks/` are the instructor's copies, with the solutions: to do the graded tasks "
                   "yourself, work in the copy each notebook's page offers to download, or in `make student`'s "
                   "`build/student/`.")
    return "\n".join([
        "# Adaptive Inference", "", run_banner(run, edition), links(intro, "README.md"), "",
        "## The path through the course", "",
        "Read the notebooks in order: each builds on the ones before. This run took "
        f"{minutes:.1f} minutes in all; the times below are this run's, on {run.device}. A notebook that finds "
        "its networks trained (by `make networks`, or an earlier run) loads them, so these can be far below "
        "the times with training in each notebook's header and under Running it yourself.", "",
        *rows, "",
        "Then: [the run's report](report.md) (each notebook's key numbers beside the published ones), "
        "[the reference results](results/README.md) (claims, margins, other machines), "
        "and [for instructors](instructors.md) (labs, student copies, grading).", "",
        "## Running it yourself", "", get_it, "", links(started, "README.md"), "",
        "```{toctree}\n:hidden:\n:caption: Notebooks\n" + toc_notebooks + "\n```", "",
        "```{toctree}\n:hidden:\n:caption: Results\nreport\n" + toc_results + "\n```", "",
        "```{toctree}\n:hidden:\n:caption: Teaching\ninstructors\n```", ""])


def report_page(run: CourseRun, edition: str) -> str:
    """The run's report, re-rendered from its own metrics with links to the notebook pages."""
    runs = []
    for entry in run.notebooks:
        metrics = run_metrics(run.folder, entry["notebook"], entry.get("status", "unknown"))
        runs.append({**entry, "seconds": entry.get("seconds", 0.0), "metrics": metrics,
                     "executed": f"notebooks/{entry['notebook']}.ipynb"})
    title, _, body = render_report(runs, html_column=False).partition("\n")
    return "\n".join([title, "", run_banner(run, edition), body])


# --- staging and building -------------------------------------------------------------------------

def _github_anchor(heading: str) -> str:
    """A heading's anchor as GitHub (and MyST's heading anchors) make it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


INJECTED_NOTE = ("# Parameters of the run shown here (papermill set them; the cell above holds the "
                 "notebook's defaults)")


def stage_pages(run: CourseRun, edition: str, src: Path, repository: str | None = None) -> list[Path]:
    """Write the Markdown and notebook pages of ``edition`` into ``src``; the pages written.
    ``repository``: its web address, where the pages link the files the site does not hold."""
    import nbformat

    root = course_root()
    readme = (root / "README.md").read_text()
    result_files = sorted(path.relative_to(root).as_posix() for pattern in RESULT_FILES
                          for path in (root / "results").rglob(pattern) if path.is_file())
    instructors_heading = next(line for line in readme.splitlines() if line.startswith("## For instructors"))
    # checkout path -> site path: the site keeps the checkout's folders, the README becoming the home page
    pages = {"README.md": "index.md", f"README.md#{_github_anchor(instructors_heading[3:])}": "instructors.md",
             **{f"notebooks/{e['notebook']}.ipynb": f"notebooks/{e['notebook']}.ipynb" for e in run.notebooks},
             **{path: path for path in result_files}}
    source_url = repository_source(repository, run.commit)

    def links(markdown: str, page: str) -> str:
        return localize_links(markdown, page, pages, source_url)

    written = []
    titles = {}
    (src / "notebooks").mkdir(parents=True)
    for entry in run.notebooks:
        name = entry["notebook"]
        executed = run.folder / f"{name}.ipynb"
        if executed.is_file():
            nb = nbformat.read(executed, as_version=4)
        else:   # it failed before papermill could write it: a page that says so
            nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {name}")])
        nb = learner_notebook(nb) if edition == "learner" else nb
        titles[name] = notebook_title(nb, name)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = links(cell.source, f"notebooks/{name}.ipynb")
            elif "injected-parameters" in cell.metadata.get("tags", []):   # two parameter cells, one explained
                cell.source = re.sub(r"^# Parameters\b", INJECTED_NOTE, cell.source)
        nb.metadata.pop("widgets", None)   # widget state would make myst-nb load its manager from a CDN
        page = src / "notebooks" / f"{name}.ipynb"
        nbformat.write(with_run_banner(nb, run_banner(run, edition, entry)), page)
        written.append(page)
        handed_out = root / "notebooks" / f"{name}.ipynb"
        if edition == "learner" and handed_out.is_file():   # the copy a learner downloads to solve the tasks
            (src / "downloads").mkdir(exist_ok=True)
            nbformat.write(learner_download(nbformat.read(handed_out, as_version=4)), src / "downloads" / f"{name}.ipynb")
    results_pages = []
    for path in result_files:
        target = src / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".md"):
            text = links((root / path).read_text(), path)
            title, _, body = text.partition("\n")
            text = "\n".join([title, "", reference_banner(run, path), body])
            figures = sorted((root / path).parent.glob("figures/*.png")) if path.endswith("README.md") else []
            if figures:   # a kept run's figures, shown on its page (its README lists them by name)
                text += "\n## Figures\n\n" + "\n\n".join(f"![{figure.stem}](figures/{figure.name})" for figure in figures) + "\n"
            target.write_text(text)
            results_pages.append(path.removesuffix(".md"))
            written.append(target)
        else:
            shutil.copy2(root / path, target)
    results_pages.sort(key=lambda page: (page != "results/README", page))
    (src / "index.md").write_text(home_page(run, edition, titles, readme, links, results_pages, repository))
    (src / "report.md").write_text(report_page(run, edition))
    (src / "instructors.md").write_text("\n".join([
        instructors_heading[1:], "", run_banner(run, edition), links(readme_section(readme, "For instructors"), "README.md"), ""]))
    return written + [src / "index.md", src / "report.md", src / "instructors.md"]


def build_edition(run: CourseRun, edition: str, out: Path, quiet: bool = True, repository: str | None = None) -> Path:
    """Build ``edition`` of the site for ``run`` into ``out/<edition>/`` (replaced only once whole)."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    if edition not in EDITIONS:
        raise ValueError(f"unknown edition {edition!r}; expected one of {', '.join(EDITIONS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / edition
    with tempfile.TemporaryDirectory(prefix=f"site-{edition}-", dir=out) as staging:
        src = Path(staging) / "pages"
        stage_pages(run, edition, src, repository)
        # built inside the staging folder: myst-nb writes its outputs beside the HTML folder (jupyter_execute/)
        html = Path(staging) / "html"
        with docutils_namespace():
            app = Sphinx(str(src), str(course_root() / "website"), str(html), str(Path(staging) / "doctrees"),
                         "html", status=None if quiet else sys.stdout, warning=sys.stderr,
                         confoverrides={"html_title": f"Adaptive Inference ({edition}'s edition)"})
            app.build()
        if app.statuscode:
            raise RuntimeError(f"Sphinx could not build the {edition}'s edition (status {app.statuscode})")
        shutil.rmtree(final, ignore_errors=True)
        html.rename(final)
    return final


def build_site(build: Path, out: Path, editions: tuple[str, ...] = EDITIONS, quiet: bool = True,
               repository: str | None = None) -> list[Path]:
    """Both editions (or those named) of the site of the course run in ``build``, into ``out``."""
    run = read_run(build)
    with folder_lock(Path(out), "building the site"):   # two builds into one folder take turns
        return [build_edition(run, edition, out, quiet, repository) for edition in editions]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=build_dir(), help="an executed course (make course's folder)")
    parser.add_argument("--out", type=Path, default=build_dir() / "site")
    parser.add_argument("--edition", choices=EDITIONS, action="append",
                        help="build only this edition (may be given twice; default: both)")
    parser.add_argument("--repository", help="the course repository's web address (e.g. https://github.com/owner/name): "
                                             "the pages link the files the site does not hold to it")
    args = parser.parse_args(argv)
    try:
        built = build_site(args.build, args.out, tuple(args.edition or EDITIONS), quiet=True, repository=args.repository)
    except (NoCourseRunError, RuntimeError) as error:
        print(f"[site] {error}", file=sys.stderr)
        return 2 if isinstance(error, NoCourseRunError) else 1
    except OSError as error:   # a full disk, a folder it may not write: the last site is left as it was
        print(f"[site] could not write the site into {args.out}: {error}; the last one there is unchanged",
              file=sys.stderr)
        return 1
    for folder in built:   # where to open it: in the checkout as the course shows paths, elsewhere in full
        folder = folder.resolve()
        print(f"[site] {shown_path(folder) if folder.is_relative_to(course_root()) else folder}/index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main())
