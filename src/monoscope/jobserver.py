"""A local job server: workflow jobs start as forks of one process that imported torch once.

Every rule runs a Python script (``script:``), and Snakemake starts each one as a new
interpreter that imports torch, torchvision, scikit-learn and monoscope again before its
first line (``benchmarks/bench_startup.py`` times a job's start both ways). On a local
run (not SLURM: there a job is minutes long and runs on another machine) the Snakefile's
``onstart`` hook starts this server, which imports what the workflow scripts import
(:func:`preload_modules`) and then waits on a Unix socket. Snakemake's shell prefix makes
every job command ``python workflow/job_client.py <the job's command>``; the client sends
the command, its working directory, its environment and its stdin/stdout/stderr to the
server, which forks a worker that runs the script with them and reports its exit status.

What a worker shares with the server, and a new interpreter would not have:

- the imported modules, and what importing them did: the union of every script's
  imports, so a job sees modules it did not import itself (a missing import in a script
  shows only with ``job_server: false`` or on SLURM; the tests run both ways);
- the string-hash seed. Python's ``random`` reseeds itself in a fork and the worker
  reseeds numpy's global generator from the OS; the workflow seeds every generator it
  uses anyway.

Everything else is the job's own: its command (``sys.argv``), folder, environment (plus
what the imports set in the server's, as they would have in the job's), standard
streams (stdout line-buffered on a terminal only, as Python sets it), signal
dispositions, RNG states and torch threads; at the end the worker does what the
interpreter does at exit (joins threads, runs ``atexit`` functions, prints an uncaught
exception with ``sys.excepthook``).

The server serves a job only when the fork is the same as a fresh interpreter:

- the command is ``<this interpreter> <script.py> [args]``;
- the job's environment equals the server's, except for the variables listed in
  :data:`PER_JOB_VARIABLES` (read when used, not at import): thread counts such as
  ``OMP_NUM_THREADS`` are read by the libraries when they load, so a job with other
  thread counts is not served;
- the server has a single thread and CUDA uninitialised after its imports
  (:func:`fork_hazard`); otherwise it serves nothing and exits. It is started with the
  jobs' thread counts; at 1, numerical libraries start no pools at import, at more the
  server usually ends there (the demo and the tests use 1).

Otherwise the client runs the command itself, as Snakemake would have, and the server's
log says why. Signals for a job (Snakemake cancelling it, a Ctrl-C) reach its client,
which forwards them to the worker; a worker whose client is killed outright is killed
too, and every worker dies with the server (``PR_SET_PDEATHSIG``); the server exits when
Snakemake does. Every rule must be a ``script:`` rule: the shell prefix is put in front
of every shell command (``start_job_server`` in rules/common.smk checks it).

Cost: Snakemake's ``benchmark:`` files measure the client, so their wall time is right
but their memory and CPU columns are not the job's; set ``job_server: false`` (config) to
measure those.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import ctypes
import functools
import importlib
import json
import logging
import os
import select
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

#: The environment variable that tells a job client where the server listens.
SOCKET_VARIABLE = "MONOSCOPE_JOB_SERVER"
#: Set in a worker's environment (to the server's pid): the job was served.
SERVED_VARIABLE = "MONOSCOPE_JOB_SERVED_BY"
#: Environment variables that may differ between the server and a job: Snakemake sets the
#: temporary folder per job, which Python reads when it is first used, and the shell that
#: runs the job command sets its own bookkeeping (the worker takes the job's values).
PER_JOB_VARIABLES = frozenset(
    {"TMPDIR", "TMP", "TEMP", "TEMPDIR", "_", "PWD", "OLDPWD", "SHLVL", SERVED_VARIABLE}
)
#: The thread-count variables Snakemake sets for every job (snakemake.shell).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
#: What the preamble of a Snakemake script imports, besides the script's own imports.
SNAKEMAKE_MODULES = ("snakemake.logging", "snakemake.iocontainers", "snakemake.script")
_HEADER = struct.Struct("!I")  # every message: a 4-byte length, then JSON
_POLL_SECONDS = 0.02  # how often the server looks for ended workers and a gone parent
_PR_SET_PDEATHSIG = 1


# ----------------------------------------------------------------------------- messages


def send_message(sock: socket.socket, message: Mapping, fds: Iterable[int] = ()) -> None:
    """Send one length-prefixed JSON message, with file descriptors when given."""
    data = json.dumps(message).encode()
    payload = _HEADER.pack(len(data)) + data
    fds = list(fds)
    if fds:
        sent = socket.send_fds(sock, [payload], fds)
        payload = payload[sent:]
    if payload:
        sock.sendall(payload)


def receive_message(sock: socket.socket, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message and the descriptors that came with it; ``(None, [])`` at end of stream.

    Reads exactly the message's bytes, so a message that follows on the same connection
    (the exit status after the acceptance) stays in the socket for the next call. The
    descriptors travel with the first bytes (``send_message``), so the header's read
    receives them. On any error the received descriptors are closed.
    """
    fds: list[int] = []
    try:
        header = _receive_exactly(sock, _HEADER.size, fds, max_fds)
        if header is None:
            _close_all(fds)
            return None, []
        body = _receive_exactly(sock, _HEADER.unpack(header)[0], fds, 0)
        if body is None:
            _close_all(fds)
            return None, []
        return json.loads(body), fds
    except BaseException:
        _close_all(fds)
        raise


def _receive_exactly(sock: socket.socket, size: int, fds: list[int], max_fds: int) -> bytes | None:
    buffer = b""
    while len(buffer) < size:
        if max_fds and not fds:
            chunk, new_fds, _, _ = socket.recv_fds(sock, size - len(buffer), max_fds)
            fds.extend(new_fds)
        else:
            chunk = sock.recv(size - len(buffer))
        if not chunk:
            return None
        buffer += chunk
    return buffer


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()


# ------------------------------------------------------------------------------ preload


def preload_modules(scripts: Iterable[str | os.PathLike]) -> list[str]:
    """The absolute imports of the given scripts, sorted, plus what Snakemake's preamble
    imports: what a job would import, so that a worker finds it imported."""
    modules = set(SNAKEMAKE_MODULES)
    for script in scripts:
        tree = ast.parse(Path(script).read_text(), filename=str(script))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
            elif isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
    return sorted(modules)


def fork_hazard() -> str | None:
    """Why a fork of this process would not be a clean start for a job; ``None`` if none.

    A forked child has only the thread that forked, so a thread pool a library started
    (or a lock one of its threads held) is broken in it; and CUDA cannot be used in a
    child forked after CUDA was initialised. Imports normally do neither.
    """
    threads = thread_count()
    if threads > 1:
        return (
            f"the server has {threads} threads after importing the modules (a library "
            "started a thread pool); forking it would not be safe"
        )
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA was initialised while importing the modules; a fork could not use it"
    return None


def thread_count() -> int:
    """The threads of this process (Linux); 1 where that cannot be read."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


# ------------------------------------------------------------------------------- server


class JobServer:
    """Accepts job requests on ``socket_path`` and runs each in a forked worker."""

    def __init__(self, socket_path: str, parent_pid: int) -> None:
        self.socket_path = socket_path
        self.parent_pid = parent_pid
        self.environment = dict(os.environ)
        # What the imports add to the environment (scikit-learn sets KMP_* variables, for
        # one): a job that imported them itself would have them too.
        self.import_environment: dict[str, str] = {}
        self.python = os.path.abspath(sys.executable)  # not resolved: a venv's own python
        self.refusal: str | None = None  # why no job can be served, if none can
        self.workers: dict[int, socket.socket] = {}  # pid -> the client's connection
        # The signal dispositions this process started with, which a worker restores
        # (set before main() installs its own SIGTERM handler).
        self.signals = {number: signal.getsignal(number) for number in _JOB_SIGNALS}
        self.selector = selectors.DefaultSelector()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(socket_path)
        self.listener.listen(64)  # clients that come during the imports wait here
        self.served = self.declined = 0

    def preload(self, modules: Iterable[str]) -> None:
        """Import ``modules``; a module that fails to import is left to the jobs."""
        started = time.perf_counter()
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as error:  # noqa: BLE001 (the job will raise it, in its log)
                log.warning("not preloaded: %s (%s: %s)", name, type(error).__name__, error)
        self.import_environment = {
            key: value for key, value in os.environ.items() if self.environment.get(key) != value
        }
        self.refusal = fork_hazard()
        if self.refusal:
            log.warning("serving no job: %s", self.refusal)
        log.info(
            "preloaded in %.1f s; listening on %s", time.perf_counter() - started, self.socket_path
        )

    def refuse_reason(self, request: Mapping) -> str | None:
        """Why the request cannot run as a fork of this server; ``None`` if it can."""
        if self.refusal:
            return self.refusal
        argv = request.get("argv") or []
        environment = request.get("environment") or {}
        if len(argv) < 2 or not argv[1].endswith(".py"):
            return f"not a Python script command: {shlex.join(argv)}"
        if os.path.abspath(_command_path(argv[0], environment)) != self.python:
            return f"another interpreter: {argv[0]} (the server runs {self.python})"
        keys = (set(environment) | set(self.environment)) - PER_JOB_VARIABLES
        differing = sorted(k for k in keys if environment.get(k) != self.environment.get(k))
        if differing:
            return "the job's environment differs from the server's in " + ", ".join(differing)
        return None

    def serve_forever(self) -> None:
        if self.refusal:
            return  # closing the socket sends every client back to running its job itself
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        while True:
            if os.getppid() != self.parent_pid:
                log.info("Snakemake (pid %d) has ended; stopping", self.parent_pid)
                return
            for key, _ in self.selector.select(_POLL_SECONDS):
                if key.fileobj is self.listener:
                    self._accept()
                else:  # a client's connection is readable: it went away
                    self._client_gone(key.data)
            self._reap()

    def _accept(self) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError as error:  # out of descriptors, say: the client runs its job itself
            log.warning("could not accept a job: %s", error)
            return
        try:
            self._start(connection)
        except Exception as error:  # noqa: BLE001 (one bad request must not stop the others)
            log.warning("could not start a job: %s: %s", type(error).__name__, error)
            _send_quietly(connection, {"accepted": False, "reason": str(error)})
            connection.close()

    def _start(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        request, fds = receive_message(connection, max_fds=3)
        try:
            if not isinstance(request, dict) or len(fds) != 3:
                connection.close()
                return
            reason = self.refuse_reason(request)
            if reason is None and _closed(connection):
                reason = "the client went away"  # it gave up waiting and runs the job itself
            if reason is not None:
                self.declined += 1
                log.info("declined (the client runs it): %s", reason)
                _send_quietly(connection, {"accepted": False, "reason": reason})
                connection.close()
                return
            pid = self._fork(connection, request, fds)
        finally:
            _close_all(fds)
        self.served += 1
        self.workers[pid] = connection
        self.selector.register(connection, selectors.EVENT_READ, pid)
        log.info("job %d: %s", pid, shlex.join(request["argv"][1:]))
        _send_quietly(connection, {"accepted": True, "pid": pid})

    def _fork(self, connection: socket.socket, request: Mapping, fds: list[int]) -> int:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        server_pid = os.getpid()
        # No signal handler of the server may run in the child before it resets them.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _JOB_SIGNALS)
        try:
            pid = os.fork()
        finally:
            if os.getpid() == server_pid:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if pid == 0:  # the worker: it ends in os._exit, whatever happens
            try:
                _run_worker(self, server_pid, blocked, connection, request, fds)
            finally:
                os._exit(1)
        return pid

    def _client_gone(self, pid: int) -> None:
        # A client sends nothing after its request: readable means closed (it was killed
        # with SIGKILL; other signals it forwards), so the job must not go on.
        log.info("job %d: its client went away; killing it", pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        connection = self.workers.pop(pid)
        self.selector.unregister(connection)
        connection.close()
        os.waitpid(pid, 0)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            connection = self.workers.pop(pid, None)
            if connection is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.info("job %d: exit status %d", pid, code)
            self.selector.unregister(connection)
            _send_quietly(connection, {"exit": code})
            connection.close()

    def shutdown(self) -> None:
        for pid, connection in list(self.workers.items()):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            connection.close()
        self.workers.clear()
        self.listener.close()
        _remove(self.socket_path)
        log.info("served %d jobs, declined %d", self.served, self.declined)


#: The signals a job may get from Snakemake or a terminal; the client forwards them.
_JOB_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _command_path(command: str, environment: Mapping[str, str]) -> str:
    """``command`` as a path: itself when it has a slash, else looked up on the job's PATH."""
    if os.sep in command:
        return command
    import shutil

    return shutil.which(command, path=environment.get("PATH")) or command


def _closed(connection: socket.socket) -> bool:
    """Whether the client closed ``connection`` (it sends nothing after its request)."""
    readable, _, _ = select.select([connection], [], [], 0)
    return bool(readable)


def _send_quietly(connection: socket.socket, message: Mapping) -> None:
    try:
        send_message(connection, message)
    except OSError:
        pass  # the client is gone; nothing is waiting for the answer


def _run_worker(
    server: JobServer, server_pid: int, mask, connection: socket.socket, request: Mapping, fds
) -> None:
    """In the forked child: become the job's process, run its script, exit with its status."""
    code = 1
    try:
        for number, disposition in server.signals.items():
            signal.signal(number, disposition)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _die_with_parent(server_pid)
        server.selector.close()
        server.listener.close()
        for other in server.workers.values():
            other.close()
        connection.close()
        log.handlers.clear()  # the server's log is not the job's
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        _close_all(list(fds))
        # As a fresh interpreter sets them: line-buffered stdout on a terminal only.
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["environment"])
        os.environ.update(server.import_environment)
        os.environ[SERVED_VARIABLE] = str(server_pid)
        tempfile.tempdir = None  # chosen again from this job's TMPDIR
        numpy = sys.modules.get("numpy")
        if numpy is not None:  # its global generator, seeded afresh as in a new process
            numpy.random.seed()
        script = request["argv"][1]
        sys.argv = list(request["argv"][1:])
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        code = _run_script(script)
    except BaseException:  # noqa: BLE001 (a worker must never return into the server loop)
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code & 0xFF)


def _run_script(script: str) -> int:
    """Run ``script`` as ``__main__`` and return the exit status Python itself would give."""
    import gc
    import runpy
    import threading

    namespace = None
    try:
        namespace = runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 (printed as the interpreter would)
        sys.excepthook(*sys.exc_info())
        code = 130 if isinstance(sys.exc_info()[1], KeyboardInterrupt) else 1
    # What the interpreter does at exit: join non-daemon threads, run the atexit
    # functions (logging, tqdm, ...), release the script's objects.
    shutdown_threads = getattr(threading, "_shutdown", None)
    if shutdown_threads is not None:
        shutdown_threads()
    atexit._run_exitfuncs()
    del namespace
    gc.collect()
    return code


def _die_with_parent(server_pid: int) -> None:
    """Have the kernel kill this worker when the server ends (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != server_pid:  # the server ended before prctl took effect
        os._exit(1)


# ------------------------------------------------------------------------------- client


def run_client(argv: list[str]) -> int:
    """Run the job command ``argv`` through the server, or run it here.

    Returns the job's exit status when the server ran it; otherwise replaces this process
    with ``argv``, as the shell would have run it (SIGPIPE and SIGXFSZ back to their
    defaults, which Python changed; 127 when the command is not found).
    """
    if not argv:
        print("monoscope job client: no command given", file=sys.stderr)
        return 2
    socket_path = os.environ.get(SOCKET_VARIABLE)
    code = _run_on_server(socket_path, argv) if socket_path else None
    if code is not None:
        return code
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as error:
        print(f"monoscope job client: {argv[0]}: {error.strerror}", file=sys.stderr)
        return 127
    raise AssertionError("unreachable")  # pragma: no cover


#: How long a client waits for the server to accept its job before running it itself
#: (the server answers once it has imported its modules, normally in seconds).
ACCEPT_TIMEOUT_SECONDS = 120.0


def _run_on_server(socket_path: str, argv: list[str]) -> int | None:
    """The job's exit status, or ``None`` when the server is absent or declines it."""
    for fd in (0, 1, 2):  # a closed standard stream cannot be sent; /dev/null stands in
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ACCEPT_TIMEOUT_SECONDS)
        sock.connect(socket_path)
        request = {"argv": argv, "cwd": os.getcwd(), "environment": dict(os.environ)}
        send_message(sock, request, fds=(0, 1, 2))
        reply, _ = receive_message(sock)  # waits while the server imports its modules
    except (OSError, ValueError):
        sock.close()  # the server checks for this before it forks: the job runs once
        return None
    if not reply or not reply.get("accepted"):
        sock.close()
        return None
    sock.settimeout(None)
    worker = int(reply["pid"])
    # From here the worker runs the job. Signals for the job (Snakemake cancelling it, a
    # Ctrl-C) go on to the worker, so it ends as the job would have; signals the job
    # would have ignored stay ignored.
    for number in _JOB_SIGNALS:
        if signal.getsignal(number) != signal.SIG_IGN:
            signal.signal(number, functools.partial(_forward, worker))
    while True:
        try:
            result, _ = receive_message(sock)
            break
        except InterruptedError:  # pragma: no cover (PEP 475 retries recv)
            continue
        except OSError:
            result = None
            break
    if result is None:
        print(
            f"monoscope job client: the job server ended before job {worker} did "
            "(its log is results/<experiment>/logs/job_server.log)",
            file=sys.stderr,
        )
        return 1
    code = int(result["exit"])
    if code < 0:  # the worker was killed by a signal: end the same way
        number = -code
        if number not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        return 128 + number
    return code


def _forward(worker: int, number: int, _frame) -> None:
    try:
        os.kill(worker, number)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------- the Snakefile's start/stop


class RunningServer:
    """The handle :func:`start` returns: the server's process and socket, and the
    :data:`SOCKET_VARIABLE` value that :meth:`stop` restores."""

    def __init__(
        self, process: subprocess.Popen, socket_path: str, log_path: str, previous: str | None
    ) -> None:
        self.process, self.socket_path, self.log_path = process, socket_path, log_path
        self.previous = previous

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _remove(self.socket_path)
        try:
            os.rmdir(os.path.dirname(self.socket_path))
        except OSError:
            pass
        if os.environ.get(SOCKET_VARIABLE) == self.socket_path:  # later jobs run by themselves
            if self.previous is None:
                del os.environ[SOCKET_VARIABLE]
            else:
                os.environ[SOCKET_VARIABLE] = self.previous


def server_environment(threads: int) -> dict[str, str]:
    """The environment of a job with ``threads`` threads, as Snakemake's shell sets it."""
    environment = dict(os.environ)
    environment.update({name: str(threads) for name in THREAD_VARIABLES})
    return environment


def start(
    scripts_dir: str | os.PathLike, threads: int, log_path: str | os.PathLike
) -> RunningServer:
    """Start a server for jobs with ``threads`` threads; its log goes to ``log_path``.

    Sets :data:`SOCKET_VARIABLE` in this process's environment, which Snakemake's jobs
    inherit, until :meth:`RunningServer.stop`. The socket lives in a new private folder under the system's temporary folder
    (Unix socket paths are limited to about 100 characters).
    """
    folder = tempfile.mkdtemp(prefix="monoscope-jobs-")
    socket_path = os.path.join(folder, "socket")
    # Before the server's environment is taken: the jobs inherit it from Snakemake too.
    previous = os.environ.get(SOCKET_VARIABLE)
    os.environ[SOCKET_VARIABLE] = socket_path
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "monoscope.jobserver",
        "--socket",
        socket_path,
        "--parent",
        str(os.getpid()),
        *sorted(str(path) for path in Path(scripts_dir).glob("*.py")),
    ]
    with open(log_path, "a") as log_file:
        process = subprocess.Popen(
            command,
            env=server_environment(threads),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # Out of Snakemake's process group: a Ctrl-C reaches each job through its
            # client (which forwards it to its worker), not the server and all at once.
            start_new_session=True,
        )
    # Clients that come before the socket exists run their jobs themselves, so wait for
    # it: the server binds it once `import monoscope` (torch) is done, in about 2 s, and
    # imports the scripts' other modules after that, while the first clients wait.
    deadline = time.monotonic() + 30
    while not os.path.exists(socket_path) and process.poll() is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return RunningServer(process, socket_path, str(log_path), previous)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the Unix socket to listen on")
    parser.add_argument("--parent", type=int, required=True, help="stop when this pid ends")
    parser.add_argument("scripts", nargs="*", help="scripts whose imports to preload")
    args = parser.parse_args(argv)
    # The server's own logger, not the root's: workers inherit the root logger, and a
    # job's logging must start as it would in a new interpreter.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s job server %(process)d: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    server = JobServer(args.socket, args.parent)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.preload(preload_modules(args.scripts))
        server.serve_forever()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
