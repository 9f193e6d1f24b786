"""Stopping a `vjbridge` child process the way a user or a service manager does."""
from __future__ import annotations

import signal
import subprocess


def stop_with(proc: subprocess.Popen, signum: int = signal.SIGINT, timeout_s: float = 30.0) -> tuple[str, str]:
    """Send `signum` and wait for the process to end; its (stdout, stderr). One that is still
    running after `timeout_s` is killed and fails the test with the end of its stderr (where a
    stuck close prints every thread's stack)."""
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        name = signal.Signals(signum).name
        raise AssertionError(f"the bridge did not stop within {timeout_s:g} s of {name}:\n{err[-4000:]}") from None
