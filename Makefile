# Adaptive Inference: `make test` and `make course` work on a fresh machine (they install first).
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PROFILE ?= quick
STAMP   := $(VENV)/.installed
SITE_STAMP := $(VENV)/.site-installed   # make site's packages (requirements-site.txt)

# trainings at a time for `make networks` and `make test` (each with its share of the CPU threads)
JOBS    ?= 2

.PHONY: install test unit networks course student collect autograde grade formgrader export bench mutation gpu-check gpu-standard gpu-wheels site clean

install: $(STAMP)

# uv installs the pins in about a minute where pip takes three (measured on 2 cores: it unpacks the
# wheels in parallel); it is pinned here and installed into .venv by pip. INSTALLER=pip installs with
# pip alone, e.g. where a package mirror is set in pip.conf, which uv does not read (uv: UV_INDEX_URL).
INSTALLER ?= uv
UV_PIN  := uv==0.13.9
ifeq ($(filter $(INSTALLER),uv pip),)
$(error INSTALLER must be uv or pip, got '$(INSTALLER)')
endif

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(PY) -m pip install -q $(UV_PIN)
	$(VENV)/bin/uv pip install --python $(PY) --compile-bytecode -r requirements.txt
	$(VENV)/bin/uv pip install --python $(PY) --compile-bytecode --no-deps -e .
else
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
endif
	touch $@

# The whole suite: library tests, every notebook end to end (quick profile), the classroom and
# browser tests, on $(JOBS) pytest workers with their share of the CPU threads each (a worker that
# is done takes tests from the other, so the slow ones, which run first, end together). The quick
# networks the notebooks load are trained first, $(JOBS) at a time. (Running the other tests beside
# those trainings saves nothing on 2 cores: the trainings keep both busy.) The browser test runs
# alone afterwards (30-45 s): on a loaded machine JupyterLab renders the notebook slowly, and the
# test waits for every cell and the kernel before it clicks Run All (clicked earlier, it ran nothing).
# The site's packages are installed too: tests/test_website.py builds both editions of the site.
test: install $(SITE_STAMP)
	$(PY) -m dyninf.course.trainings --profile quick --train --jobs $(JOBS)
	$(PY) -m pytest -n $(JOBS) --dist worksteal -m "not browser"
	$(PY) -m pytest -m browser

# Library tests only (seconds).
unit: install
	$(PY) -m pytest -m "not notebook"

# Train (or load) every network the notebooks of $(PROFILE) use, $(JOBS) at a time, into runs/:
# before a lab, so that the notebooks (and make grade) load them instead of training.
networks: install
	$(PY) -m dyninf.course.trainings --profile $(PROFILE) --train --jobs $(JOBS)

# Execute every notebook in order into build/: notebooks, HTML, metrics JSON, REPORT.md.
course: install
	$(PY) -m dyninf.tools.runner --profile $(PROFILE) --out build

# The course as a static website from an executed course, without running anything again: a learner's
# edition (graded tasks without solutions, hidden checks or model answers) and an instructor's, in
# $(SITE_OUT)/learner/ and $(SITE_OUT)/instructor/ (open index.html). SITE_FROM: any profile's run, e.g.
# build/standard. Its packages (requirements-site.txt) go into .venv only here.
SITE_FROM ?= build
SITE_OUT ?= $(SITE_FROM)/site
# SITE_REPOSITORY: the course repository's web address; the pages link the files the site does not hold to it
SITE_REPOSITORY ?=
$(SITE_STAMP): requirements-site.txt $(STAMP)
	$(if $(filter uv,$(INSTALLER)),$(VENV)/bin/uv pip install --python $(PY),$(PY) -m pip install) -q -r requirements-site.txt
	touch $@
site: $(SITE_STAMP)
	$(PY) -m dyninf.tools.website --build $(SITE_FROM) --out $(SITE_OUT) $(if $(SITE_REPOSITORY),--repository $(SITE_REPOSITORY))

# For a class (README, "For instructors"): student copies of the notebooks in build/student/ (no
# solution, hidden test, model answer or library source of a task's answer; outputs removed), made by
# nbgrader in its course folder build/nbgrader/, one assignment per notebook.
student: install
	$(PY) -m dyninf.tools.classroom student

# Grading. Exit status 0 when grading worked (whatever the scores), 1 when a notebook could not be
# graded (it did not run), 2 for a wrong argument. A task's cells may run $(TASK_TIMEOUT) s, the
# notebook's other cells $(CELL_TIMEOUT) s (a training where no network is cached), the whole notebook
# $(NOTEBOOK_TIMEOUT) s, then they are stopped; its kernel may use $(MEMORY_GIB) GiB (0: no limit). Each
# notebook runs confined by bubblewrap where it is installed (dyninf/tools/sandbox.py; README says what that protects).
TASK_TIMEOUT ?= 60
CELL_TIMEOUT ?= 1800
NOTEBOOK_TIMEOUT ?= 3600
MEMORY_GIB ?= 8
LIMITS := --task-timeout $(TASK_TIMEOUT) --cell-timeout $(CELL_TIMEOUT) --notebook-timeout $(NOTEBOOK_TIMEOUT) \
	--memory-gib $(MEMORY_GIB)
STUDENT ?= student

# Copy handed-in notebooks (HANDED_IN/<student>/<notebook>.ipynb) into build/nbgrader/submitted/.
collect: install
	@test -n "$(HANDED_IN)" || { echo "usage: make collect HANDED_IN=folder (one folder per student, named by the id)" >&2; exit 2; }
	$(PY) -m dyninf.tools.classroom collect "$(HANDED_IN)"

# Autograde every submission not graded yet into one gradebook: a line per student and notebook,
# feedback HTML, build/nbgrader/task-scores.csv (each task, its reason) and grades.csv (nbgrader's).
# AGAIN=1: regrade the submissions graded before as well.
autograde: install
	$(PY) -m dyninf.tools.classroom autograde $(LIMITS) $(if $(AGAIN),--again)

# Autograde one filled-in copy and print the score per task: make grade NB=path/to/00_resnet_baseline.ipynb [STUDENT=id]
grade: install
	@test -n "$(NB)" || { echo "usage: make grade NB=path/to/<notebook>.ipynb [STUDENT=id] (a filled-in student copy)" >&2; exit 2; }
	$(PY) -m dyninf.tools.classroom grade "$(NB)" --student "$(STUDENT)" $(LIMITS)

# The answers in words, graded by hand: JupyterLab in the course folder, menu Nbgrader > Formgrader.
formgrader: install
	@test -f build/nbgrader/nbgrader_config.py || { echo "no course folder build/nbgrader/ yet: run make student first" >&2; exit 2; }
	cd build/nbgrader && $(abspath $(VENV))/bin/jupyter lab --ip=127.0.0.1

# nbgrader's grades.csv again, after grading by hand (make autograde writes it too).
export: install
	$(PY) -m dyninf.tools.classroom export

# Measured speed-up of skipped execution over the plain network (random decisions and every trained
# decider in runs/$(PROFILE)/), beside the ideal one from MACs: a table, build/bench/*.json and .png.
bench: install
	$(PY) benchmarks/skipping.py --profile $(PROFILE)

# Mutation testing of the deciders and the cost model (mutmut, configured in pyproject.toml): each
# mutant is one small change to lib/dyninf/deciders/ or network/cost.py, run against the tests that cover
# it; prints the share killed and lists the survivors. 13 minutes on 2 cores (AVX-512); not in `make
# test`. It runs on a copy of the last commit in build/mutation/ with lib/ renamed src/: mutmut 3
# imports mutated code only from ./, src/ or source/ (from lib/ the original would be imported).
# One thread per test process: mutmut forks them, and a fork of a process whose OpenMP threads have
# started can hang until the mutant's time-out.
MUTMUT_PIN := mutmut==3.8.1
MUTATION := build/mutation
mutation: install
	$(if $(filter uv,$(INSTALLER)),$(VENV)/bin/uv pip install --python $(PY),$(PY) -m pip install) -q $(MUTMUT_PIN)
	rm -rf $(MUTATION) && mkdir -p $(MUTATION)
	git archive HEAD | tar -x -C $(MUTATION)
	mv $(MUTATION)/lib $(MUTATION)/src
	cd $(MUTATION) && OMP_NUM_THREADS=1 $(abspath $(VENV))/bin/mutmut run --max-children $(JOBS) > run.log 2>&1
	cd $(MUTATION) && $(abspath $(VENV))/bin/mutmut results --all true > results.txt
	@awk -F': ' 'NF == 2 {n++; k += ($$2 == "killed")} END {printf "mutants killed: %d of %d (%.1f%%)\n", k, n, 100 * k / n}' $(MUTATION)/results.txt
	@grep -v ': killed$$' $(MUTATION)/results.txt || true

# On a machine with a GPU: the unit tests (CUDA ones included), the quick course on CUDA and the
# benchmark (meant to take under 8 minutes on one H100); $(GPU_CHECK_OUT)/SUMMARY.md and
# $(GPU_CHECK_OUT).tar.gz. No install step: it runs with .venv if there is one, else with $(PYTHON)
# as it is (a GPU image has its own PyTorch), and reports the versions it finds.
# GPU_CHECK_ARGS=--dry-run: the same steps cut short, for a CPU (make test runs it so).
GPU_PY := $(if $(wildcard $(PY)),$(PY),$(PYTHON))
GPU_LIB := PYTHONPATH=$(CURDIR)/lib$${PYTHONPATH:+:$$PYTHONPATH}
GPU_CHECK_OUT ?= build/gpu-check
gpu-check:
	$(GPU_LIB) $(GPU_PY) -m dyninf.tools.gpu_check --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# On a GPU, the standard profile end to end (issue 16): every training, timed (a stopped run
# resumes: run it again), the course on the trained networks, and the run kept as reference
# results in results/standard/. No install step, as gpu-check.
gpu-standard:
	$(GPU_LIB) $(GPU_PY) -m dyninf.course.trainings --profile standard --train
	$(GPU_LIB) $(GPU_PY) -m dyninf.tools.runner --profile standard --out build/standard
	$(GPU_LIB) $(GPU_PY) -m dyninf.tools.reference --build build/standard --out results/standard

# For an offline GPU machine whose image has PyTorch but not the notebook runner: wheels of
# papermill, nbconvert, ipykernel and nbformat (the pinned versions) and all they need, for its
# Python ($(GPU_PYTHON_VERSION)), into .whl/ (about 20 MB). README, "On a GPU", says how to use them.
GPU_PYTHON_VERSION ?= 3.12
GPU_WHEELS := papermill nbconvert ipykernel nbformat
gpu-wheels: install
	$(PY) -m pip download -q --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl \
		$$(grep -E '^($(subst $(eval) ,|,$(GPU_WHEELS)))==' requirements.txt | cut -d' ' -f1)

clean:
	rm -rf build
