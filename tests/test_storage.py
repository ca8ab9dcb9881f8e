"""The cross-process lock: refused while held, free again when the holder dies, even by kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from core.storage import LockHeld, file_lock

HOLDER = """
import sys, time
from core.storage import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_refused_while_the_first_holds_the_lock_and_served_once_it_died(tmp_path):
    path = tmp_path / "run" / "lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld) as refused:
            with file_lock(path, blocking=False):
                pass
        assert refused.value.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with file_lock(path, blocking=False):  # no stale lock after kill -9
        assert path.read_text() == str(os.getpid())


def test_the_lock_is_released_at_the_end_of_the_block(tmp_path):
    with file_lock(tmp_path / "lock"):
        pass
    with file_lock(tmp_path / "lock", blocking=False):
        pass
