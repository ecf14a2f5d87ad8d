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
import json
import posixpath
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dyninf.tools.classroom import as_handed_out
from dyninf.tools.report import render_report, run_metrics
from dyninf.utils.io import folder_lock
from dyninf.utils.paths import build_dir, course_root, shown_path

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

    nb = as_handed_out(nb)
    nb, _ = ClearSolutions().preprocess(nb, {})
    nb, _ = ClearHiddenTests().preprocess(nb, {})
    for cell in nb.cells:
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (grading.get("solution") or grading.get("grade")):
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
    edition_text = {
        "learner": "Learner's edition: each graded task shows its task and its visible checks, not its "
                   "solution, hidden checks or model answer. Download the notebook (the button at the top) "
                   "to solve them.",
        "instructor": "Instructor's edition: solutions, hidden checks and model answers are shown. "
                      "Give a class the learner's edition.",
    }[edition]
    return f"```{{admonition}} The run shown here\n:class: course-run\n{shown} {edition_text}\n```\n"


def reference_banner(run: CourseRun, path: str) -> str:
    """The note at the top of a page of the reference results: they come from the runs they name,
    kept in the checkout, not from the run that the rest of the site shows."""
    return (f"```{{admonition}} The runs shown here\n:class: course-run\n"
            f"This page is `{path}` of the checkout at commit `{run.commit}`: reference results, from the runs "
            f"it names (their machines and dates are on the page), not from the run that the notebook pages show "
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


def localize_links(markdown: str, page: str, pages: dict[str, str]) -> str:
    """``markdown`` from the course file ``page`` (its path in the checkout) with each relative link
    pointed at the site: to the site's copy where ``pages`` (checkout path -> site path) has one,
    else kept as its text (a file of the checkout that the site does not hold, such as the library's
    source, which a reader finds in the checkout)."""
    here = posixpath.dirname(page)
    site_here = posixpath.dirname(pages.get(page, page)) or "."

    def link(match: re.Match) -> str:
        image, text, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):   # another site, or an anchor of this page
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(here, path))
        if resolved in pages:
            relative = posixpath.relpath(pages[resolved], site_here)
            return f"{image}[{text}]({relative}{'#' + anchor if anchor else ''})"
        return "" if image else text
    return _LINK.sub(link, markdown)


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


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        for line in cell.source.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return fallback


def home_page(run: CourseRun, edition: str, titles: dict[str, str], readme: str, pages: dict[str, str],
              results: list[str]) -> str:
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
    return "\n".join([
        "# Adaptive Inference", "", run_banner(run, edition), localize_links(intro, "README.md", pages), "",
        "## The path through the course", "",
        "Read the notebooks in order: each builds on the ones before. This run took "
        f"{minutes:.1f} minutes in all; the times below are this run's, on {run.device}.", "",
        *rows, "",
        "Then: [the run's report](report.md) (each notebook's key numbers beside the published ones), "
        "[the reference results](results/README.md) (claims, margins, other machines), "
        "and [for instructors](instructors.md) (labs, student copies, grading).", "",
        "## Running it yourself", "", localize_links(started, "README.md", pages), "",
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

def stage_pages(run: CourseRun, edition: str, src: Path) -> list[Path]:
    """Write the Markdown and notebook pages of ``edition`` into ``src``; the pages written."""
    import nbformat

    root = course_root()
    readme = (root / "README.md").read_text()
    result_files = sorted(path.relative_to(root).as_posix() for pattern in RESULT_FILES
                          for path in (root / "results").rglob(pattern) if path.is_file())
    # checkout path -> site path: the site keeps the checkout's folders, the README becoming the home page
    pages = {"README.md": "index.md", **{f"notebooks/{e['notebook']}.ipynb": f"notebooks/{e['notebook']}.ipynb"
                                         for e in run.notebooks}, **{path: path for path in result_files}}
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
        titles[name] = _title(nb, name)
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = localize_links(cell.source, f"notebooks/{name}.ipynb", pages)
        nb.metadata.pop("widgets", None)   # widget state would make myst-nb load its manager from a CDN
        page = src / "notebooks" / f"{name}.ipynb"
        nbformat.write(with_run_banner(nb, run_banner(run, edition, entry)), page)
        written.append(page)
    results_pages = []
    for path in result_files:
        target = src / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".md"):
            text = localize_links((root / path).read_text(), path, pages)
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
    (src / "index.md").write_text(home_page(run, edition, titles, readme, pages, results_pages))
    (src / "report.md").write_text(report_page(run, edition))
    instructors = readme_section(readme, "For instructors")
    (src / "instructors.md").write_text("\n".join([
        "# For instructors: labs, student copies and grading", "", run_banner(run, edition),
        localize_links(instructors, "README.md", pages), ""]))
    return written + [src / "index.md", src / "report.md", src / "instructors.md"]


def build_edition(run: CourseRun, edition: str, out: Path, quiet: bool = True) -> Path:
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
        stage_pages(run, edition, src)
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


def build_site(build: Path, out: Path, editions: tuple[str, ...] = EDITIONS, quiet: bool = True) -> list[Path]:
    """Both editions (or those named) of the site of the course run in ``build``, into ``out``."""
    run = read_run(build)
    with folder_lock(Path(out), "building the site"):   # two builds into one folder take turns
        return [build_edition(run, edition, out, quiet) for edition in editions]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=build_dir(), help="an executed course (make course's folder)")
    parser.add_argument("--out", type=Path, default=build_dir() / "site")
    parser.add_argument("--edition", choices=EDITIONS, action="append",
                        help="build only this edition (may be given twice; default: both)")
    args = parser.parse_args(argv)
    try:
        built = build_site(args.build, args.out, tuple(args.edition or EDITIONS), quiet=True)
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
