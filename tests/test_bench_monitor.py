"""bench/monitor.py's worker_memory: the Celery worker's whole process tree, its pool children
(forks of the main process) and whatever else it starts (a model server, say), apart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench.monitor import worker_memory

# A stand-in for a worker's main process: one forked child (as a prefork pool child is) and one
# exec'd child (as a model server started with subprocess would be), each holding some memory.
WORKER = """
import os, subprocess, sys, time
block = bytearray(30 * 1024 * 1024)
if os.fork() == 0:
    mine = bytearray(20 * 1024 * 1024)
    time.sleep(120)
    os._exit(0)
server = subprocess.Popen([sys.executable, "-c",
    "import time; b = bytearray(40 * 1024 * 1024); print('up', flush=True); time.sleep(120)"],
    stdout=subprocess.PIPE)
server.stdout.readline()
print("started", flush=True)
time.sleep(120)
"""


def test_it_counts_the_pool_children_and_every_other_process_the_worker_started():
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert worker.stdout.readline().strip() == b"started"
        time.sleep(0.3)  # the fork's bytearray
        memory = worker_memory([worker.pid])
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    assert memory["pool_children"] == 1 and memory["other_children"] == 1
    assert memory["tree_processes"] == 3
    assert memory["other_children_rss_mb"] >= 40  # the "model server"'s 40 MB
    assert memory["pool_children_rss_mb"] >= 20
    parts = memory["main_rss_mb"] + memory["pool_children_rss_mb"] + memory["other_children_rss_mb"]
    assert abs(memory["tree_rss_mb"] - parts) <= 0.3  # each part rounded to 0.1 MB
    # PSS counts the pages the fork shares with its parent once: below the RSS sum.
    assert 40 < memory["tree_pss_mb"] < memory["tree_rss_mb"]
    assert memory["worker_pss_mb"] == memory["tree_pss_mb"]


def test_a_worker_that_is_gone_has_no_memory():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    memory = worker_memory([gone.pid])

    assert memory["tree_processes"] == 0 and memory["tree_rss_mb"] == 0.0
