"""The local job server: a served job behaves as the command run by itself would.

Each test runs the job client (workflow/job_client.py) as Snakemake's shell prefix does,
in front of ``<python> <script.py>``, and checks what the job saw and returned.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, copy_workflow
from helpers import snakemake

from monoscope import jobserver

CLIENT = REPO / "workflow" / "job_client.py"

REPORTER = """
import json, os, sys
print(json.dumps({
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "cwd": os.getcwd(),
    "argv": sys.argv,
    "served_by": os.environ.get("MONOSCOPE_JOB_SERVED_BY"),
    "tmpdir": os.environ.get("TMPDIR"),
}))
print("a line on stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A job server started as the Snakefile starts it (one thread per job)."""
    folder = tmp_path_factory.mktemp("server")
    scripts = folder / "scripts"
    scripts.mkdir()
    (scripts / "job.py").write_text("import json\nimport numpy\n")
    running = start_server(scripts, folder / "server.log")
    yield running
    running.stop()


def start_server(scripts, log_path):
    """``jobserver.start`` outside pytest's per-test variable (stop() restores the rest)."""
    # pytest names the current test and phase in the environment, which then differs
    # between the server and the jobs (job_environment leaves it out too).
    test_name = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        return jobserver.start(scripts, threads=1, log_path=log_path)
    finally:
        if test_name is not None:
            os.environ["PYTEST_CURRENT_TEST"] = test_name


def job_environment():
    """The environment Snakemake gives a job of a one-thread rule."""
    environment = jobserver.server_environment(threads=1)
    environment.pop("PYTEST_CURRENT_TEST", None)
    return environment


def run_job(script, *args, environment=None, cwd=None, **kwargs):
    """Run ``python script args`` through the client, as a job of a one-thread rule."""
    environment = environment or job_environment()
    environment.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run(
        [sys.executable, str(CLIENT), sys.executable, str(script), *map(str, args)],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def write_script(folder, text, name="script.py"):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_served_job_sees_its_own_command_folder_streams_and_status(server, tmp_path):
    script = write_script(tmp_path, REPORTER)
    environment = job_environment()
    environment["TMPDIR"] = str(tmp_path)  # Snakemake sets it per job: it may differ
    result = run_job(script, 3, environment=environment, cwd=tmp_path)
    assert result.returncode == 3
    seen = json.loads(result.stdout)
    assert seen["ppid"] == server.process.pid  # a fork of the server...
    assert seen["served_by"] == str(server.process.pid)
    assert seen["cwd"] == str(tmp_path)  # ...in the job's folder, with its argv and env
    assert seen["argv"] == [str(script), "3"]
    assert seen["tmpdir"] == str(tmp_path)
    assert result.stderr == "a line on stderr\n"
    assert run_job(script, 0, cwd=tmp_path).returncode == 0


def test_an_exception_prints_its_traceback_and_exits_1(server, tmp_path):
    script = write_script(
        tmp_path,
        """
        import os, sys
        print("served by", os.environ.get("MONOSCOPE_JOB_SERVED_BY"), file=sys.stderr)
        raise RuntimeError("the job failed here")
        """,
    )
    result = run_job(script)
    assert result.returncode == 1
    assert f"served by {server.process.pid}" in result.stderr
    assert "Traceback" in result.stderr
    assert "RuntimeError: the job failed here" in result.stderr


def test_short_jobs_report_their_exit_status(server, tmp_path):
    # The acceptance and the exit status can reach the client in one read; each must be
    # read as its own message.
    script = write_script(tmp_path, "import sys\nsys.exit(int(sys.argv[1]))\n")
    for code in range(8):
        assert run_job(script, code).returncode == code


def test_a_job_killed_by_a_signal_ends_its_client_the_same_way(server, tmp_path):
    script = write_script(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert run_job(script).returncode == -signal.SIGKILL


def test_a_job_with_other_thread_counts_runs_by_itself(server, tmp_path):
    script = write_script(tmp_path, REPORTER)
    environment = jobserver.server_environment(threads=2)  # numpy would read it at import
    result = run_job(script, 0, environment=environment)
    assert result.returncode == 0
    seen = json.loads(result.stdout)
    assert seen["served_by"] is None
    assert seen["ppid"] == os.getpid()  # the client became the job (exec)
    log = open(server.log_path).read()
    assert "differs from the server's in GOTO_NUM_THREADS" in log


def test_without_a_server_the_client_runs_the_job_itself(tmp_path):
    script = write_script(tmp_path, REPORTER)
    environment = job_environment()
    environment[jobserver.SOCKET_VARIABLE] = str(tmp_path / "no-server")
    result = run_job(script, 4, environment=environment)
    assert result.returncode == 4
    assert json.loads(result.stdout)["ppid"] == os.getpid()


def start_waiting_job(server, folder):
    """A served job that records its pid and then waits; ``(client, worker pid)``."""
    marker, cleaned = folder / "pid", folder / "cleaned"
    script = write_script(
        folder,
        f"""
        import json, os, time
        with open({str(marker)!r} + ".tmp", "w") as file:
            json.dump([os.getpid(), os.getppid()], file)
        os.replace({str(marker)!r} + ".tmp", {str(marker)!r})
        try:
            time.sleep(120)
        finally:  # runs on KeyboardInterrupt, as in the job run by itself
            open({str(cleaned)!r}, "w").close()
        """,
    )
    client = subprocess.Popen(
        [sys.executable, str(CLIENT), sys.executable, str(script)], env=job_environment()
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.02)
    worker, parent = json.loads(marker.read_text())
    assert parent == server.process.pid  # served
    return client, worker


@pytest.mark.parametrize(
    ("sent", "status", "cleaned_up"),
    [
        (signal.SIGTERM, -signal.SIGTERM, False),  # Snakemake cancelling the job
        (signal.SIGINT, 130, True),  # Ctrl-C: KeyboardInterrupt, finally blocks run
        (signal.SIGKILL, -signal.SIGKILL, False),  # the client killed outright
    ],
)
def test_a_signal_to_the_client_ends_the_worker(server, tmp_path, sent, status, cleaned_up):
    client, worker = start_waiting_job(server, tmp_path)
    client.send_signal(sent)
    assert client.wait(10) == status
    deadline = time.monotonic() + 10
    while _alive(worker):
        assert time.monotonic() < deadline, "the worker outlived its client"
        time.sleep(0.02)
    assert (tmp_path / "cleaned").exists() == cleaned_up


def test_a_stopped_server_ends_its_workers(tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    before = os.environ.get(jobserver.SOCKET_VARIABLE)
    running = start_server(folder, tmp_path / "server.log")
    try:
        client, worker = start_waiting_job(running, tmp_path)
        running.stop()
        assert client.wait(10) == 1  # "the job server ended before job ... did"
        assert not _alive(worker)
    finally:
        running.stop()
    assert os.environ.get(jobserver.SOCKET_VARIABLE) == before  # stop() restored it


def test_a_server_with_a_thread_serves_nothing(tmp_path, monkeypatch):
    # Forking a process with a running thread is unsafe: a preloaded module that starts
    # one makes the server decline every job (they run by themselves).
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
    )
    server = jobserver.JobServer(str(tmp_path / "socket"), parent_pid=os.getppid())
    before = jobserver.thread_count()
    try:
        server.preload(["starts_a_thread"])
        assert jobserver.thread_count() == before + 1
        reason = server.refuse_reason(
            {"argv": [sys.executable, "job.py"], "environment": dict(os.environ)}
        )
        assert reason is not None and "threads" in reason
    finally:
        server.shutdown()


def test_initialised_cuda_is_a_fork_hazard(monkeypatch):
    import torch

    monkeypatch.setattr(jobserver, "thread_count", lambda: 1)  # pytest's own may differ
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert jobserver.fork_hazard() is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert "CUDA" in jobserver.fork_hazard()


def test_preload_lists_the_scripts_imports_and_the_preamble_s(tmp_path):
    (tmp_path / "one.py").write_text("import numpy\nfrom monoscope.io import save_tensors\n")
    (tmp_path / "two.py").write_text("from . import relative\nimport os.path\n")
    modules = jobserver.preload_modules([tmp_path / "one.py", tmp_path / "two.py"])
    assert modules == sorted({"numpy", "monoscope.io", "os.path", *jobserver.SNAKEMAKE_MODULES})


@pytest.mark.workflow
def test_a_workflow_run_through_the_server_equals_one_without(tmp_path):
    """The tiny config's data and subject model, with and without the server: the same
    samples and the same weights bit for bit, and the jobs' logs say which ran how."""
    from monoscope.io import load_tensors

    target = "results/tiny/models/subject.safetensors"
    runs = {}
    for job_server in ("True", "False"):
        workdir = copy_workflow(tmp_path / job_server)
        result = snakemake(
            workdir,
            target,
            "--cores",
            "2",
            "--configfile",
            "tiny.yaml",
            "--config",
            f"job_server={job_server}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        log = (workdir / "results/tiny/logs/train_subject.log").read_text()
        assert ("started as a fork of the job server" in log) == (job_server == "True")
        runs[job_server] = workdir
    served, alone = runs["True"], runs["False"]
    samples = "results/tiny/data/samples.csv"
    assert (served / samples).read_bytes() == (alone / samples).read_bytes()
    weights_served, _ = load_tensors(served / target)
    weights_alone, _ = load_tensors(alone / target)
    assert weights_served.keys() == weights_alone.keys()
    assert all(weights_served[k].equal(weights_alone[k]) for k in weights_served)
    server_log = (served / "results/tiny/logs/job_server.log").read_text()
    assert "served 2 jobs, declined 0" in server_log
    assert not (alone / "results/tiny/logs/job_server.log").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
