"""The kernel that runs a student's notebook when it is graded, confined by bubblewrap (``bwrap``,
Debian's package ``bubblewrap``), a sandbox made of the Linux kernel's namespaces:

* the machine read-only; the kernel's working folder a fresh, empty one (a tmpfs, gone with it);
* of the course checkout only what the notebooks import and load (``lib/``, ``data/``, ``results/``,
  the Python environment and the trained runs, all read-only; a run that is missing trains into a
  throwaway tmpfs); not ``notebooks/`` (the instructor's
  copies), ``build/`` (the gradebook, nbgrader's source with the hidden tests, other students'
  submissions), ``tests/`` or ``.git``; the grader's home folder hidden too;
* an unprivileged user (uid 65534) without capabilities, its own process, IPC and host-name
  namespaces, killed with the grader; its memory (``RLIMIT_DATA``) and ``/tmp`` limited.

Not confined: the network (the kernel talks to the grader over 127.0.0.1) and files elsewhere on
the machine, which it can read but not change. Without ``bwrap`` (macOS, a machine without the
package), or where the machine forbids namespaces, grading still runs, unconfined, in a fresh
temporary folder with the same memory limit, and says so.

nbgrader starts kernels from a kernel spec; ``write_kernel_spec`` writes one, ``dyninf-sandbox``,
whose command is this module: ``python -m dyninf.tools.sandbox [options] -- <the kernel's command>``.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from dyninf.utils.io import atomic_write_text
from dyninf.utils.paths import course_root

KERNEL_NAME = "dyninf-sandbox"
UNPRIVILEGED = 65534            # nobody
WORKDIR = "/tmp/submission"     # the kernel's working folder inside the sandbox
TMP_BYTES = 2 * 2**30           # /tmp (the working folder included): a tmpfs, so memory; 2 GiB
# what the notebooks need of the checkout (dyninf.utils.paths finds them there, under DYNINF_HOME)
COURSE_PARTS = ("lib", "data", "results", "pyproject.toml")


def bwrap() -> str | None:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=None)
def confinement_problem() -> str:
    """'' where a kernel can be confined here; otherwise why not, in one line."""
    program = bwrap()
    if program is None:
        return "bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)"
    probe = subprocess.run([program, *_namespaces(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                            "--size", str(2**20), "--tmpfs", "/tmp", "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"bwrap cannot make a sandbox on this machine: {probe.stderr.strip() or probe.returncode}"
    return ""


def _namespaces() -> list[str]:
    return ["--unshare-user", "--uid", str(UNPRIVILEGED), "--gid", str(UNPRIVILEGED), "--unshare-pid",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--cap-drop", "ALL"]


def sandbox_command(kernel: list[str], connection_file: str | None, hidden: list[Path]) -> list[str]:
    """bwrap's command line that runs ``kernel`` confined (see the module's docstring); ``hidden``:
    further folders the kernel must not see (nbgrader's course folder, where it lies elsewhere)."""
    root = course_root()
    home = Path.home()
    command = [bwrap(), *_namespaces(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--size", str(TMP_BYTES), "--tmpfs", "/tmp", "--dir", WORKDIR]
    # hide (an empty tmpfs over each), then bring back read-only what the kernel needs inside them
    for folder in [home, root, *hidden]:
        if folder.is_dir() and folder != Path("/"):
            command += ["--tmpfs", str(folder)]
    needed = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), *(root / part for part in COURSE_PARTS)]
    if connection_file:
        needed.append(Path(connection_file).resolve())
    for path in dict.fromkeys(needed):
        if path.exists():
            command += ["--ro-bind", str(path), str(path)]
    command += _trained_runs(root / "runs")
    command += ["--setenv", "HOME", "/tmp/home", "--dir", "/tmp/home", "--setenv", "DYNINF_HOME", str(root),
                "--setenv", "MPLCONFIGDIR", "/tmp/home/matplotlib", "--setenv", "IPYTHONDIR", "/tmp/home/ipython",
                "--setenv", "TMPDIR", "/tmp", "--chdir", WORKDIR,
                # the kernel's parent inside is the sandbox's pid 1, not the grader it was told of
                # (it would think the grader gone); --die-with-parent ends it with the grader
                "--unsetenv", "JPY_PARENT_PID", "--"]
    return command + kernel


def _trained_runs(runs: Path) -> list[str]:
    """The runs read-only, each run folder as it is; a run that is missing can still be trained,
    into a tmpfs gone with the kernel (a graded notebook never changes the course's runs)."""
    arguments = []
    for profile in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        arguments += ["--tmpfs", str(profile)]
        for run in sorted(p for p in profile.iterdir() if p.is_dir()):
            arguments += ["--ro-bind", str(run), str(run)]
    return arguments


def limit_memory(gib: float) -> None:
    """Cap the data this process and its children may allocate (heap and anonymous maps): past
    it an allocation fails (MemoryError, or PyTorch's "can't allocate memory") in the cell."""
    if gib:
        size = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (size, size))


def write_kernel_spec(folder: Path, memory_gib: float, hidden: list[Path]) -> Path:
    """The kernel spec ``dyninf-sandbox`` in ``folder/kernels/`` (add ``folder`` to JUPYTER_PATH
    for Jupyter to find it): this Python's ipykernel, run through this module."""
    spec = {"argv": [sys.executable, "-m", "dyninf.tools.sandbox", "--memory-gib", str(memory_gib),
                     *(item for path in hidden for item in ("--hide", str(Path(path).resolve()))), "--",
                     sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (graded, confined)", "language": "python", "interrupt_mode": "signal",
            "metadata": {"debugger": False}}
    path = folder / "kernels" / KERNEL_NAME / "kernel.json"
    atomic_write_text(path, json.dumps(spec, indent=1))
    return path


def use_kernel_specs_in(folder: Path) -> None:
    """Let Jupyter (in this process and the kernels' managers it starts) find the specs in ``folder``."""
    paths = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
    if str(folder) not in paths:
        os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder), *filter(None, paths)])


def _away_from_the_terminal() -> None:
    """The kernel's input and output off the grader's terminal and log: what a cell prints reaches
    the notebook over Jupyter's channels, and the kernel's own start-up banner is no news. Its
    errors stay, unless they would go to a terminal (a program holding one could type into the
    grader's shell)."""
    with open(os.devnull, "r+b") as null:
        for fd in (0, 1, 2):
            if fd < 2 or os.isatty(fd):
                os.dup2(null.fileno(), fd)


def _connection_file(kernel: list[str]) -> str | None:
    return next((kernel[i + 1] for i, item in enumerate(kernel[:-1]) if item == "-f"), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start a Jupyter kernel confined for grading.")
    parser.add_argument("--memory-gib", type=float, default=0, help="memory limit in GiB (0: none)")
    parser.add_argument("--hide", type=Path, action="append", default=[], help="a folder the kernel must not see")
    parser.add_argument("kernel", nargs=argparse.REMAINDER, help="-- then the kernel's command line")
    args = parser.parse_args(argv)
    kernel = args.kernel[1:] if args.kernel[:1] == ["--"] else args.kernel
    if not kernel:
        parser.error("expected -- and the kernel's command line")
    # Jupyter interrupts a kernel with SIGINT to its process group: bwrap, ignoring it, passes it
    # on untouched to the kernel, which handles it around each execution
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_memory(args.memory_gib)
    _away_from_the_terminal()
    problem = confinement_problem()
    if not problem:
        command = sandbox_command(kernel, _connection_file(kernel), args.hide)
        os.execv(command[0], command)   # bwrap is the kernel's process: Jupyter's signals reach it
    print(f"[dyninf.tools.sandbox] grading unconfined: {problem}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="dyninf-submission-") as folder:
        # its parent is this process, not the grader that started it
        child = subprocess.Popen(kernel, cwd=folder, env={**os.environ, "JPY_PARENT_PID": str(os.getpid())})
        signal.signal(signal.SIGTERM, lambda *_: child.terminate())
        return child.wait()


if __name__ == "__main__":
    sys.exit(main())
