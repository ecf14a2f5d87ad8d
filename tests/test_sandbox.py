"""The kernel graded notebooks run on: confined (what it can see, write and use), interruptible,
and ended with the grader."""
import json
import os
import textwrap

import pytest

from dyninf.utils.paths import course_root
from dyninf.tools.sandbox import KERNEL_NAME, confinement_problem, main, sandbox_command, use_kernel_specs_in, \
    write_kernel_spec

needs_sandbox = pytest.mark.skipif(bool(confinement_problem()) and not os.environ.get("DYNINF_REQUIRE_SANDBOX"),
                                   reason=f"no sandbox here: {confinement_problem()}")


@pytest.fixture()
def kernel(tmp_path, monkeypatch):
    from jupyter_client.manager import start_new_kernel

    hidden = tmp_path / "course-folder"   # as nbgrader's course folder outside the checkout
    (hidden / "source").mkdir(parents=True)
    (hidden / "source" / "answers.ipynb").write_text("{}")
    monkeypatch.setenv("JUPYTER_PATH", "")
    write_kernel_spec(tmp_path, memory_gib=2, hidden=[hidden])
    use_kernel_specs_in(tmp_path)
    manager, client = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=60)
    yield manager, client, tmp_path
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def _run(client, code: str, timeout: float = 60) -> dict:
    outputs = {"stdout": "", "error": None, "status": None}

    def hook(message):
        if message["msg_type"] == "stream":
            outputs["stdout"] += message["content"]["text"]
        elif message["msg_type"] == "error":
            outputs["error"] = message["content"]["ename"]

    reply = client.execute_interactive(textwrap.dedent(code), timeout=timeout, output_hook=hook)
    outputs["status"] = reply["content"]["status"]
    return outputs


@needs_sandbox
def test_graded_code_sees_no_answer_writes_only_its_own_folder_and_is_held_to_its_memory(kernel):
    _, client, outside = kernel

    def trained_runs() -> set[str]:
        return {str(p.relative_to(course_root())) for p in (course_root() / "runs").glob("*/*") if p.is_dir()}
    before = trained_runs()   # another test may be training a run meanwhile (make test runs two at once)
    seen = _run(client, f"""
        import json, os
        from pathlib import Path
        from dyninf.utils.paths import course_root
        root = course_root()
        def writable(path):
            try:
                Path(path).write_text("x")
                return True
            except OSError:
                return False
        print(json.dumps({{
            "uid": os.getuid(), "cwd": os.getcwd(), "cwd holds": os.listdir("."),
            "checkout": sorted(os.listdir(root)),
            "hidden": [p for p in ("notebooks", "build", "tests", ".git") if (root / p).exists()],
            "course folder": os.path.exists({str(outside / "course-folder")!r})
                             and os.listdir({str(outside / "course-folder")!r}),
            "home": os.path.exists({os.path.expanduser("~")!r}) and os.listdir({os.path.expanduser("~")!r}),
            "write here": writable("mine.txt"), "write lib": writable(root / "lib" / "x.py"),
            "write etc": writable("/etc/escaped"),
            # beside the checkout and in the test's folder: where that lies under /tmp, the write may land
            # in the sandbox's own /tmp; either way nothing may appear outside (checked below)
            "tried": [writable(root.parent / "escaped-from-grading.txt"), writable({str(outside / "escaped.txt")!r})],
            "runs": sorted(str(p.relative_to(root)) for p in (root / "runs").glob("*/*")),
            "write a run": writable(next((root / "runs").glob("*/*/history.json"), "/etc/none")),
            "train a new run": writable(root / "runs" / "quick" / "new_run.txt")
                               if (root / "runs" / "quick").is_dir() else True,
        }}))
    """)
    found = json.loads(seen["stdout"])
    assert found["uid"] == 65534 and found["cwd"] == "/tmp/submission" and found["cwd holds"] == []
    assert found["hidden"] == [] and not found["course folder"], found
    assert set(found["home"] or []) <= {".pyenv", ".local"}, "the grader's home: only the Python it runs"
    assert set(found["checkout"]) <= {"lib", "data", "runs", "results", "pyproject.toml", ".venv"}, found
    assert found["write here"] and not (found["write lib"] or found["write etc"]), found
    # the graded code sees the runs as they are: those trained before it ran, and any finished meanwhile
    assert before <= set(found["runs"]) <= trained_runs(), found
    assert not found["write a run"] and found["train a new run"], found
    assert not (course_root() / "runs" / "quick" / "new_run.txt").exists()
    assert not (outside / "escaped.txt").exists(), "what it wrote stayed in the sandbox"
    assert not (course_root().parent / "escaped-from-grading.txt").exists()
    assert _run(client, "block = bytearray(3 * 2**30)")["error"] == "MemoryError"   # the kernel has 2 GiB
    assert _run(client, "import torch; print(torch.ones(3).sum().item())")["stdout"] == "3.0\n"


@needs_sandbox
def test_a_confined_kernel_is_interrupted_like_any_other_and_ends_with_its_grader(kernel):
    manager, client, _ = kernel
    # stop_on_error=False: else the kernel aborts requests that reach it just after the error reply
    # (a race under load), as nbgrader's allow_errors does not
    looping = client.execute("import time\nwhile True:\n    time.sleep(0.05)", stop_on_error=False)
    import time

    time.sleep(1)
    manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=20)
    while reply["parent_header"].get("msg_id") != looping:   # replies to the start's kernel_info requests
        reply = client.get_shell_msg(timeout=20)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    after = _run(client, "print(1 + 1)")
    assert after == {"stdout": "2\n", "error": None, "status": "ok"}, "the kernel lives on after the interrupt"


def test_the_sandbox_hides_the_checkout_and_the_home_folder_then_brings_back_only_what_notebooks_need(tmp_path):
    command = sandbox_command(["python", "-m", "ipykernel_launcher", "-f", str(tmp_path / "k.json")],
                              str(tmp_path / "k.json"), [tmp_path])
    tmpfs = [command[i + 1] for i, item in enumerate(command) if item == "--tmpfs"]
    assert str(course_root()) in tmpfs and str(tmp_path) in tmpfs and os.path.expanduser("~") in tmpfs
    bound = [command[i + 1] for i, item in enumerate(command) if item == "--ro-bind"]
    assert not any(part in path for path in bound for part in ("/notebooks", "/build", "/tests", "/.git")), bound
    assert str(course_root() / "lib") in bound
    assert command[-6:] == ["--", "python", "-m", "ipykernel_launcher", "-f", str(tmp_path / "k.json")]
    assert command[command.index("--unsetenv") + 1] == "JPY_PARENT_PID"
    with pytest.raises(SystemExit):
        main(["--memory-gib", "1"])   # no kernel command: refused, not started
