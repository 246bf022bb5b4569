"""Run untrusted generated code in a throw-away, resource-limited Python subprocess.

Guards against accidents of a small model's code (endless loops, huge allocations, stray
writes, network), not against a determined adversary: the audit hook is plain Python.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Runs in the child before the user code, which arrives on stdin. Limits are set here rather
# than in a preexec_fn, so run_code stays safe to call from threads.
_PRELUDE = r"""
import os, resource, sys
cpu, mem = int(sys.argv[1]), 1 << 30
for lim, val in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, mem),
                 (resource.RLIMIT_FSIZE, 1 << 20), (resource.RLIMIT_NOFILE, 64)):
    resource.setrlimit(lim, (val, val))
src = sys.stdin.read()
root = os.path.realpath(os.getcwd())
os.environ.clear()
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATHS = {"os.remove": 1, "os.rename": 2, "os.mkdir": 1, "os.rmdir": 1, "shutil.rmtree": 1,
         "os.symlink": 2, "os.link": 2, "os.chmod": 1, "os.chown": 1, "os.truncate": 1,
         "os.utime": 1}
DENY = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
        "os.fork", "os.forkpty", "os.kill", "os.killpg", "ctypes.", "pty.", "signal.")

def inside(path):
    if isinstance(path, int):
        return True  # an already open descriptor
    p = os.path.realpath(os.fspath(path))
    return p == root or p.startswith(root + os.sep)

def hook(event, args):
    if event == "open":
        if args[2] & WRITE and not inside(args[0]):
            raise PermissionError(f"sandbox: write outside the sandbox refused: {args[0]!r}")
    elif event in PATHS:
        if not all(inside(a) for a in args[:PATHS[event]]):
            raise PermissionError(f"sandbox: {event} outside the sandbox refused")
    elif event.startswith(DENY):
        raise PermissionError(f"sandbox: {event} refused")

sys.addaudithook(hook)  # cannot be removed once added
exec(compile(src, "<solution>", "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    error: str  # last line of the traceback, "timeout", or "" when ok


def run_code(source: str, timeout: float = 5.0) -> SandboxResult:
    """Run `source` in a fresh `python -I` in its own temp dir; ok iff it exits cleanly."""
    with tempfile.TemporaryDirectory(prefix="stdec-sandbox-") as tmp:
        err_path = os.path.join(tmp, ".stderr")
        with open(err_path, "wb") as err:
            cmd = [sys.executable, "-I", "-S", "-B", "-c", _PRELUDE, str(int(timeout) + 1)]
            proc = subprocess.Popen(
                cmd, cwd=tmp, env={}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True)  # own group: a timeout kills all of it
            try:
                proc.communicate(source.encode(), timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return SandboxResult(False, f"timeout after {timeout:g} s")
        if proc.returncode == 0:
            return SandboxResult(True, "")
        with open(err_path, errors="replace") as f:
            lines = f.read().strip().splitlines()
        return SandboxResult(False, lines[-1] if lines else f"exit status {proc.returncode}")
