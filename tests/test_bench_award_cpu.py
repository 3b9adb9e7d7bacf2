"""bench/award.py: the CPU a loaded server used is read from /proc, its workers included."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.award import with_cpu

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

# A "master" whose one child burns about 0.4 s of CPU once told to, then says so and idles.
MASTER = r"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", '''
import sys, time
sys.stdin.readline()
t = time.process_time()
while time.process_time() - t < 0.4:
    pass
print("done", flush=True)
time.sleep(60)
'''], stdin=sys.stdin, stdout=sys.stdout)
child.wait()
"""


def test_with_cpu_counts_the_children_of_the_server_and_per_request():
    with subprocess.Popen([sys.executable, "-c", MASTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as master:
        children = Path(f"/proc/{master.pid}/task/{master.pid}/children")
        child = []
        for _ in range(200):  # until the child exists (the /proc children list shows it)
            child = [int(c) for c in children.read_text().split()]
            if child:
                break
            time.sleep(0.05)
        assert child, "the child did not start"

        def load():
            master.stdin.write("go\n")
            master.stdin.flush()
            assert master.stdout.readline().strip() == "done"
            return {"requests": 10}

        try:
            r = with_cpu(master.pid, load)
        finally:
            for pid in (child[0], master.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    # 0.4 s over 10 requests is 40 ms each, all of it in the child (not this process).
    assert 35 <= r["cpu_server_ms"] <= 60
    assert r["cpu_client_ms"] < 20
    assert r["cores_busy"] > 0
