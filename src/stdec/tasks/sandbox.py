"""Run untrusted generated code behind a kernel boundary.

Scored code (HumanEval, MBPP, the testbed's `code` task) is written by a model, so it is run
as an adversary's would be. A launcher (`python -I -S`, started fresh per program) sets up,
with nothing but Linux system calls:

- new mount, network, PID, IPC, UTS and cgroup namespaces (and a user namespace when stdec
  does not run as root): no network interface but a down loopback, no other process visible;
- a root of its own: a tmpfs holding read-only, nosuid bind mounts of the Python standard
  library and the system's shared libraries, /dev/null, /dev/zero and /dev/urandom, and a
  small writable, noexec tmpfs at /tmp; nothing else of the host (no /etc, /root, /home,
  /proc, no shell) is visible, and the old root is detached;
- an unprivileged user: a fresh uid that owns no file (root runs), or the invoking user with
  every capability dropped (rootless runs, through a user namespace);
- no_new_privs, and a seccomp filter that refuses execve/execveat (no other program runs,
  whatever route the interpreter takes: fork_exec, posix_spawn, ctypes, os.exec*), network
  sockets, namespace and mount calls, ptrace, bpf, io_uring and kernel-module calls;
- limits on CPU time, address space (512 MiB), file size (1 MiB), open files (64) and
  processes (8, counted per uid, so that a fork bomb holds at most 4 GiB); the program is
  PID 1 of its namespace, so when it ends (or the launcher is killed) every process it
  started dies with it.

A Python audit hook is kept as a second layer only (clearer messages for common escapes).
The error text handed back keeps the exception type and a short, sanitised message.

When the kernel refuses to set this up (no namespaces, no seccomp, an unknown CPU
architecture), `run_code` raises `SandboxUnavailable` with one sentence saying what is
missing, unless the caller passes `unsandboxed=True` (the CLI's --allow-unsandboxed-code),
which runs the code with resource limits and the audit hook only.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from stdec.errors import StdecError

__all__ = ["SandboxResult", "SandboxUnavailable", "run_code", "sandbox_problem"]

SETUP_FAILED = 125  # the launcher's exit status when the isolation could not be set up
_SETUP_TAG = "STDEC-SANDBOX-SETUP: "

# The second layer: an audit hook that refuses the usual escapes with a clear message.
_AUDIT = r"""
def _install_audit(root):
    import os, sys
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    DENY = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "os.forkpty", "os.kill", "os.killpg", "ctypes.", "pty.", "signal.")

    def inside(path):
        if isinstance(path, int):
            return True  # an already open descriptor
        p = os.path.realpath(os.fspath(path))
        return p == root or p.startswith(root + os.sep) or p.startswith("/dev/")

    def hook(event, args):
        if event == "open":
            if args[2] & WRITE and not inside(args[0]):
                raise PermissionError("sandbox: write outside the sandbox refused")
        elif event.startswith(DENY):
            raise PermissionError(f"sandbox: {event} refused")

    sys.addaudithook(hook)  # cannot be removed once added
"""

# Runs the program and reports its outcome as the last line of stderr.
_RUN = r"""
def _run(src):
    import os, sys
    def report(e):
        msg = " ".join(str(e).split())[:160]
        name = type(e).__name__
        sys.stderr.write(f"\n{name}: {msg}\n" if msg else f"\n{name}\n")
        sys.stderr.flush()
    try:
        exec(compile(src, "<solution>", "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        os._exit(code & 0xFF)
    except BaseException as e:  # noqa: BLE001 - reported, then the process ends
        try:
            report(e)
        finally:
            os._exit(1)
    sys.stdout.flush()
    os._exit(0)
"""

# The launcher. argv: timeout seconds, uid for root runs, audit hook 0/1, mount point.
_LAUNCHER = _AUDIT + _RUN + r"""
import ctypes, os, resource, struct, sys

def fail(what):
    os.write(2, f"\n{TAG}{what}\n".encode())
    os._exit(SETUP_FAILED)

TAG, SETUP_FAILED = "@TAG@", @SETUP_FAILED@
timeout, uid, audit, mnt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
src = sys.stdin.read()
libc = ctypes.CDLL(None, use_errno=True)
ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(os.uname().machine)
# syscall numbers: pivot_root, capset, then the ones the filter refuses
NR = {
    "x86_64": dict(pivot_root=155, capset=126, execve=59, execveat=322, ptrace=101, mount=165,
                   umount2=166, chroot=161, unshare=272, setns=308, bpf=321,
                   perf_event_open=298, keyctl=250, add_key=248, request_key=249,
                   userfaultfd=323, process_vm_readv=310, process_vm_writev=311,
                   kexec_load=246, kexec_file_load=320, init_module=175, finit_module=313,
                   delete_module=176, reboot=169, swapon=167, swapoff=168,
                   open_by_handle_at=304, name_to_handle_at=303, io_uring_setup=425,
                   io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429,
                   fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
                   acct=163, quotactl=179, iopl=172, ioperm=173, socket=41, socketpair=53,
                   clone=56, clone3=435),
    "aarch64": dict(pivot_root=41, capset=91, execve=221, execveat=281, ptrace=117, mount=40,
                    umount2=39, chroot=51, unshare=97, setns=268, bpf=280,
                    perf_event_open=241, keyctl=219, add_key=217, request_key=218,
                    userfaultfd=282, process_vm_readv=270, process_vm_writev=271,
                    kexec_load=104, kexec_file_load=294, init_module=105, finit_module=273,
                    delete_module=106, reboot=142, swapon=224, swapoff=225,
                    open_by_handle_at=265, name_to_handle_at=264, io_uring_setup=425,
                    io_uring_enter=426, io_uring_register=427, open_tree=428, move_mount=429,
                    fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
                    acct=89, quotactl=60, socket=198, socketpair=199, clone=220, clone3=435),
}.get(os.uname().machine)
if ARCH is None or NR is None:
    fail(f"no seccomp filter for the {os.uname().machine} CPU architecture (x86_64 and "
         "aarch64 have one)")

def call(ret, what):
    if ret != 0:
        fail(f"{what} failed ({os.strerror(ctypes.get_errno())})")

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
NS = {"mount": 0x20000, "UTS": 0x4000000, "IPC": 0x8000000, "user": 0x10000000,
      "PID": 0x20000000, "network": 0x40000000, "cgroup": 0x2000000}

def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    call(libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)),
         f"mount of {dst}")

def bind(path, root, dev=False):
    # read-only, nosuid bind of one host path; flags the host mount locks (noexec...) kept
    target = root + path
    if os.path.isdir(path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(path, target, None, MS_BIND)
    keep = 0
    st = os.statvfs(path).f_flag
    for st_flag, ms_flag in ((os.ST_NOEXEC, MS_NOEXEC), (os.ST_NODEV, MS_NODEV),
                             (os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048),
                             (os.ST_RELATIME, 1 << 21)):
        if st & st_flag:
            keep |= ms_flag
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | keep
          | (0 if dev else MS_NODEV))

root_run = os.geteuid() == 0
outer_uid, outer_gid = os.getuid(), os.getgid()
flags = sum(NS.values()) - (NS["user"] if root_run else 0)
if libc.unshare(flags) != 0:
    err = os.strerror(ctypes.get_errno())
    fail("the kernel refused new namespaces (" + err + "); run as root, or enable "
         "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
         "user.max_user_namespaces > 0, or kernel.apparmor_restrict_unprivileged_userns=0)")
if not root_run:
    for name, text in (("setgroups", "deny"), ("uid_map", f"{outer_uid} {outer_uid} 1"),
                       ("gid_map", f"{outer_gid} {outer_gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)

# the child says "ready" on this pipe once the sandbox is up, then closes it: only the
# launcher, which the program cannot reach, decides that the setup failed (status 125)
ready_r, ready_w = os.pipe()
pid = os.fork()  # the child is PID 1 of the new PID namespace
if pid:
    os.close(ready_w)
    ready = os.read(ready_r, 8) == b"ready"
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    if not ready:
        os._exit(SETUP_FAILED)
    os._exit(1 if code == SETUP_FAILED else code)
os.close(ready_r)

# ---- PID 1 of the sandbox: build its root ----
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount("tmpfs", mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=256,mode=755")
paths = sorted({p for p in sys.path if os.path.isdir(p)}
               | {p for p in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/local/lib",
                              "/lib", "/lib64", "/lib32") if os.path.isdir(p)})
done = []
for p in paths:
    if any(p == d or p.startswith(d + "/") for d in done):
        continue  # already visible through a parent bind
    real = os.path.realpath(p)
    if real != p and any(real == d or real.startswith(d + "/") for d in done):
        os.makedirs(os.path.dirname(mnt + p), exist_ok=True)
        os.symlink(real, mnt + p)  # /lib -> /usr/lib on merged-/usr systems
        continue
    bind(real, mnt)
    if real != p:
        os.makedirs(os.path.dirname(mnt + p), exist_ok=True)
        os.symlink(real, mnt + p)
    done.append(real)
for p in ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"):
    if os.path.exists(p):
        bind(p, mnt, dev=True)
if os.path.isfile("/etc/ld.so.cache"):  # where the loader finds shared libraries
    bind("/etc/ld.so.cache", mnt)
os.makedirs(mnt + "/tmp")
mount("tmpfs", mnt + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
      "size=16m,nr_inodes=1024,mode=1777")
os.chdir(mnt)
call(libc.syscall(NR["pivot_root"], b".", b"."), "pivot_root")
call(libc.umount2(b".", 2), "detaching the old root")  # MNT_DETACH
os.chdir("/")
mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
os.chdir("/tmp")

# ---- an unprivileged user, no capabilities ----
if root_run:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from 0 to non-zero: the kernel clears every capability
else:
    header = struct.pack("Ii", 0x20080522, 0)
    data = ctypes.create_string_buffer(24)
    call(libc.syscall(NR["capset"], header, data), "dropping capabilities")
if os.geteuid() == 0:
    fail("could not leave the root user")

# ---- limits; the program dies with the launcher ----
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
call(libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PDEATHSIG)")
# PID 1 ignores SIGXCPU at the soft limit; the hard limit's SIGKILL always lands
resource.setrlimit(resource.RLIMIT_CPU, (timeout, timeout + 1))
# processes x address space bounds the memory a fork bomb can hold: 8 x 512 MiB
for lim, val in ((resource.RLIMIT_AS, 512 << 20), (resource.RLIMIT_FSIZE, 1 << 20),
                 (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_NPROC, 8),
                 (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(lim, (val, val))
call(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl(DUMPABLE)")
call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")

# ---- seccomp: a classic BPF program over (arch, nr, args) ----
LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
ALLOW, KILL = 0x7FFF0000, 0x80000000
EPERM, ENOSYS = 0x50000 | 1, 0x50000 | 38
prog = [(LD, 0, 0, 4), (JEQ, 1, 0, ARCH), (RET, 0, 0, KILL), (LD, 0, 0, 0)]
if os.uname().machine == "x86_64":  # x32 system calls: refused outright
    prog += [(0x35, 0, 1, 0x40000000), (RET, 0, 0, KILL)]
refused = [n for k, n in NR.items()
           if k not in ("pivot_root", "capset", "socket", "socketpair", "clone", "clone3")]
for n in refused:
    prog += [(JEQ, 0, 1, n), (RET, 0, 0, EPERM)]
prog += [(JEQ, 0, 1, NR["clone3"]), (RET, 0, 0, ENOSYS)]  # libc falls back to clone
# clone: no new namespaces
prog += [(JEQ, 0, 3, NR["clone"]), (LD, 0, 0, 16), (JSET, 0, 1, sum(NS.values())),
         (RET, 0, 0, EPERM), (LD, 0, 0, 0)]
# socket/socketpair: AF_UNIX only
for n in (NR["socket"], NR["socketpair"]):
    prog += [(JEQ, 0, 3, n), (LD, 0, 0, 16), (JEQ, 1, 0, 1), (RET, 0, 0, EPERM),
             (LD, 0, 0, 0)]
prog += [(RET, 0, 0, ALLOW)]
filt = b"".join(struct.pack("HBBI", *ins) for ins in prog)
buf = ctypes.create_string_buffer(filt)
fprog = struct.pack("HxxxxxxP", len(prog), ctypes.addressof(buf))
call(libc.prctl(PR_SET_SECCOMP, 2, ctypes.c_char_p(fprog), 0, 0), "installing seccomp")

# ---- the program: stdout discarded, the report on stderr ----
devnull = os.open("/dev/null", os.O_WRONLY)
os.dup2(devnull, 1)
os.close(devnull)
os.environ.clear()
if audit:
    _install_audit("/tmp")
os.write(ready_w, b"ready")
os.close(ready_w)
_run(src)
""".replace("@TAG@", _SETUP_TAG).replace("@SETUP_FAILED@", str(SETUP_FAILED))

# Without the kernel boundary (--allow-unsandboxed-code): limits and the audit hook only.
_UNSANDBOXED = _AUDIT + _RUN + r"""
import os, resource, sys
cpu = int(sys.argv[1])
for lim, val in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, 1 << 30),
                 (resource.RLIMIT_FSIZE, 1 << 20), (resource.RLIMIT_NOFILE, 64)):
    resource.setrlimit(lim, (val, val))
src = sys.stdin.read()
os.environ.clear()
_install_audit(os.path.realpath(os.getcwd()))
_run(src)
"""

_REPORT = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]{0,79})(?:: (.*))?$")


class SandboxUnavailable(StdecError):
    """The kernel would not set up the isolation that scored code needs."""


@dataclass(frozen=True)
class SandboxResult:
    ok: bool
    error: str  # "Type: short message", "timeout after N s", or "" when ok


def _sanitise(text: str, status: int) -> str:
    """The report line's exception type and at most 120 printable characters of message."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    m = _REPORT.match(lines[-1].strip()) if lines else None
    if status < 0 or status > 128:
        sig = -status if status < 0 else status - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig in (signal.SIGKILL, signal.SIGXCPU):
            return f"killed by {name} (CPU time or memory limit)"
        return f"killed by {name}"
    if m is None:
        return f"exit status {status}"
    msg = "".join(c if c.isprintable() else "?" for c in (m.group(2) or ""))[:120]
    return f"{m.group(1)}: {msg}" if msg else m.group(1)


def _sandbox_uid() -> int:
    # a fresh uid far above any real account: it owns no file, and its process count (the
    # RLIMIT_NPROC budget) is its own
    return 2_000_000_000 + secrets.randbelow(100_000_000)


def _execute(script: str, source: str, timeout: float, tmp: str, audit: bool) -> tuple[int, str]:
    err_path = os.path.join(tmp, "stderr")
    mnt = os.path.join(tmp, "root")
    os.mkdir(mnt)
    with open(err_path, "w+b") as err:
        cmd = [sys.executable, "-I", "-S", "-B", "-c", script, str(int(timeout) + 1),
               str(_sandbox_uid()), "1" if audit else "0", mnt]
        proc = subprocess.Popen(
            cmd, cwd=mnt, env={}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=err, start_new_session=True)  # own group: a timeout kills all of it
        try:
            proc.communicate(source.encode(errors="replace"), timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return -1, "timeout"
        finally:
            if proc.poll() is None:  # interrupted: never leave the child behind
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - 4096))  # the report is the last line
        return proc.returncode, err.read().decode(errors="replace")


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """None when the kernel sandbox works here, else one sentence saying what is missing."""
    if sys.platform != "linux":
        return f"scoring code needs Linux's namespaces and seccomp, and this is {sys.platform}."
    with tempfile.TemporaryDirectory(prefix="stdec-sandbox-") as tmp:
        status, text = _execute(_LAUNCHER, "pass", 10.0, tmp, True)
    if status == 0:
        return None
    why = text.split(_SETUP_TAG, 1)[1].splitlines()[0] if _SETUP_TAG in text else \
        f"the sandbox launcher exited with status {status}"
    return f"cannot isolate scored code: {why}."


def check_sandbox(allow_unsandboxed: bool = False) -> None:
    """Raise SandboxUnavailable (one sentence) unless the sandbox works or the caller allows
    running scored code without it."""
    problem = sandbox_problem()
    if problem and not allow_unsandboxed:
        raise SandboxUnavailable(f"{problem[:-1]}; fix that, or pass --allow-unsandboxed-code "
                                 "to run model-written code without isolation.")


def run_code(source: str, timeout: float = 5.0, *, unsandboxed: bool = False,
             audit: bool = True) -> SandboxResult:
    """Run `source` in the sandbox; ok iff it exits cleanly within `timeout` seconds.

    With `unsandboxed=True`, code runs with resource limits and the audit hook only when the
    kernel sandbox cannot be set up here. `audit=False` drops the second layer (for tests
    that check the kernel boundary alone).
    """
    problem = sandbox_problem()
    if problem and not unsandboxed:
        check_sandbox()
    script = _UNSANDBOXED if problem else _LAUNCHER
    with tempfile.TemporaryDirectory(prefix="stdec-sandbox-") as tmp:
        status, text = _execute(script, source, timeout, tmp, audit)
    if status == 0:
        return SandboxResult(True, "")
    if status == -1:
        return SandboxResult(False, f"timeout after {timeout:g} s")
    if status == SETUP_FAILED and script is _LAUNCHER:  # the launcher's word, not the program's
        why = text.split(_SETUP_TAG, 1)[1].splitlines()[0] if _SETUP_TAG in text else \
            f"the sandbox launcher exited with status {status}"
        raise SandboxUnavailable(f"cannot isolate scored code: {why}.")
    return SandboxResult(False, _sanitise(text, status))
