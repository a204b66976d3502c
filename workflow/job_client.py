"""Run one job command through monoscope's local job server (monoscope/jobserver.py).

Snakemake's shell prefix puts this script in front of every job command of a local run
(the Snakefile's ``onstart``). It loads ``monoscope/jobserver.py`` by its file path, not
as ``monoscope.jobserver``: importing the package imports torch, which is the cost the
server saves. The module needs only the standard library.
"""

import importlib.util
import os
import signal
import sys

package = importlib.util.find_spec("monoscope")  # finds the package without importing it
if len(sys.argv) < 2:
    sys.exit("usage: job_client.py <command> [args...]")
if package is None or not package.submodule_search_locations:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as the shell would run it
    os.execvp(sys.argv[1], sys.argv[1:])  # no monoscope here: run the job as it is
path = os.path.join(package.submodule_search_locations[0], "jobserver.py")
spec = importlib.util.spec_from_file_location("monoscope_jobserver_client", path)
jobserver = importlib.util.module_from_spec(spec)
spec.loader.exec_module(jobserver)
sys.exit(jobserver.run_client(sys.argv[1:]))
