"""The PostgreSQL test cluster's watchdog (9d6a31b) and a postmaster.pid naming a pid the
system has handed to another process since.

The watchdog, once the process that made its cluster died, read the pid in postmaster.pid,
ran `pg_ctl stop` on it and then SIGKILLed that pid whatever pg_ctl said. A lock left by a
postmaster killed earlier (`PostgresCluster.kill()`, as the reliability tests do, the test
process killed before its restart), or the moment after pg_ctl stopped it, names a pid the
system may hand to any process (pid_max is 32,768 here; a test run starts thousands): pg_ctl
sent it SIGQUIT as the cluster's user (another session's postmaster runs as that user too),
and the watchdog SIGKILLed it as root. Now both are sent only to the cluster's own postmaster
(its command line names the cluster's data directory)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

# A pid reused: the killed postmaster's lock is made to name a process of another's.
SCRIPT = """
import os, signal, subprocess
from tests.pg_cluster import PostgresCluster
cluster = PostgresCluster()
cluster.start()
cluster.kill()
other = subprocess.Popen(
    ["sleep", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
)
lock = cluster.data_dir / "postmaster.pid"
lines = lock.read_text().split(chr(10))
lock.write_text(chr(10).join([str(other.pid), *lines[1:]]))
print(cluster.root, other.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_the_watchdog_signals_no_process_that_took_the_postmasters_pid() -> None:
    project = Path(__file__).resolve().parents[2]
    made = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=project, capture_output=True, text=True, timeout=90
    )
    assert made.returncode == -signal.SIGKILL, made.stderr
    root_name, pid = made.stdout.split()
    root, other = Path(root_name), int(pid)
    try:
        deadline = time.monotonic() + 30
        while root.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not root.exists()  # the watchdog did its work
        time.sleep(0.2)
        assert alive(other)  # and left the process with the pid alone
    finally:
        subprocess.run(["kill", "-9", str(other)], check=False)


def test_a_frozen_postmaster_of_the_cluster_is_still_killed() -> None:
    """Unchanged: the cluster's own postmaster, frozen (pg_ctl cannot stop it), is SIGKILLed
    and the cluster's directory removed."""
    script = (
        "import os, signal\n"
        "from tests.pg_cluster import PostgresCluster\n"
        "cluster = PostgresCluster()\n"
        "cluster.start()\n"
        "pid = int((cluster.data_dir / 'postmaster.pid').read_text().split(chr(10), 1)[0])\n"
        "os.kill(pid, signal.SIGSTOP)\n"
        "print(cluster.root, pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    project = Path(__file__).resolve().parents[2]
    made = subprocess.run(
        [sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=90
    )
    assert made.returncode == -signal.SIGKILL, made.stderr
    root_name, pid = made.stdout.split()
    root, postmaster = Path(root_name), int(pid)
    deadline = time.monotonic() + 60  # pg_ctl's 10 s first
    while (alive(postmaster) or root.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(postmaster)
    assert not root.exists()
