"""What the harness needs beside its figures: the machine they were measured on, data-parallel
setup (shard by rank, gather on rank 0), result files written atomically; and the names of
the weight-only quantization modes, which every entrance checks before torch loads."""

import contextlib
import os
import platform
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

from stdec.errors import StdecError

__all__ = ["QUANT_MODES", "atomic_path", "check_quantize", "cpu_count", "cpuinfo", "dist_setup",
           "gather", "git_commit", "hardware", "load_avg", "rank_device", "versions",
           "write_atomic"]

# weight-only quantization at load (stdec.load(quantize=...); the work is models/quant.py's)
QUANT_MODES = ("int8", "int4")


def check_quantize(mode: str | None, head: bool = False, embeddings: bool = False
                   ) -> str | None:
    """`mode` when it is one of QUANT_MODES or None; `head` (quantize the output head too)
    and `embeddings` (the input embedding table too) need a mode. Torch-free: entrances call
    it before any model work."""
    if mode is not None and mode not in QUANT_MODES:
        raise StdecError(f"quantize must be one of {', '.join(QUANT_MODES)} (or none, for the "
                         f"model dtype), got {mode!r}.")
    if head and mode is None:
        raise StdecError("quantize_head (--quantize-head) quantizes the output head along "
                         "with the linear layers, but no quantize mode is set; add quantize "
                         "int8 or int4 (--quantize), or drop it.")
    if embeddings and mode is None:
        raise StdecError("quantize_embeddings (--quantize-embeddings) quantizes the input "
                         "embedding table along with the linear layers, but no quantize mode "
                         "is set; add quantize int8 or int4 (--quantize), or drop it.")
    return mode


# ---- the environment, written beside every figure ----

def cpuinfo(key: str) -> str | None:
    """The first `key` line of /proc/cpuinfo ("model name", "flags"), or None off Linux."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), None)
    except OSError:
        return None


def hardware(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = cpuinfo("model name") or platform.machine()
    return f"{name} ({torch.get_num_threads()} threads)"


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_avg() -> float | None:
    """The 1-minute load average (runnable processes), None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers

    try:
        own = version("stdec")
    except PackageNotFoundError:
        own = "unknown"
    out = {"stdec": own, "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version()}
    try:  # weight-only quantization's kernels (stdec[quant])
        out["torchao"] = version("torchao")
    except PackageNotFoundError:
        pass
    return out


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---- data parallel: shard problems by rank, gather on rank 0 ----

def dist_setup() -> tuple[int, int]:
    """(rank, world size); starts torch.distributed when a launcher set WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), world


def rank_device(device: str | None) -> str:
    """`device`, or this process's GPU (LOCAL_RANK, set by torchrun/accelerate), or the CPU."""
    if device:
        return device
    import torch

    return f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"


def gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


# ---- result files ----

@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A new empty file beside `path` to write to (same suffix, so that a writer may infer
    the format from it); renamed onto `path` when the block ends without error, removed
    otherwise: a reader never sees half a file.

    The file is created with mode 0o666 and the kernel applies the process's umask, as for
    any file the user writes (tempfile.mkstemp would make it 0o600, private to the user).
    """
    path = Path(path)
    while True:
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes):
    """Write `data` to `path` through a file beside it and a rename (atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
