"""Checkpoint I/O: load_model picks the architecture from config.json; safetensors only."""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from stdec.errors import StdecError
from stdec.models.cache import KVCache
from stdec.models.dream import DreamConfig, DreamModel
from stdec.models.lavida import (
    LaViDaConfig,
    LaViDaDreamConfig,
    LaViDaDreamModel,
    LaViDaModel,
    lavida_class,
)
from stdec.models.llada import LLaDAConfig, LLaDAModelLM
from stdec.models.llada_v import LLaDAVConfig, LLaDAVModel

__all__ = ["DreamConfig", "DreamModel", "KVCache", "LLaDAConfig", "LLaDAModelLM", "LLaDAVConfig",
           "LLaDAVModel", "LaViDaConfig", "LaViDaDreamConfig", "LaViDaDreamModel", "LaViDaModel",
           "load_model", "model_class", "resolve_device", "resolve_dtype", "save_model",
           "skeleton"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
INDEX = "model.safetensors.index.json"
CONFIGS = {LLaDAModelLM: LLaDAConfig, DreamModel: DreamConfig,  # model class -> its config
           LLaDAVModel: LLaDAVConfig, LaViDaModel: LaViDaConfig,
           LaViDaDreamModel: LaViDaDreamConfig}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None picks float32 on the CPU and bfloat16 on an accelerator."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype not in DTYPES:
        raise StdecError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise StdecError(f"unknown device {device!r}; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StdecError(f"device {str(device)!r} asked for, but CUDA is not available; use cpu.")
    return device


def read_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise StdecError(f"model path {str(path)!r} is not a folder; give a checkpoint folder "
                         "with config.json and safetensors weights.")
    try:
        return json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        raise StdecError(f"{str(path)!r} has no config.json; it is not a checkpoint.") from None
    except json.JSONDecodeError as err:
        raise StdecError(f"{str(path / 'config.json')!r} is not valid JSON ({err}).") from None


def weight_files(path: Path) -> list[Path]:
    if (path / INDEX).is_file():
        try:
            index = json.loads((path / INDEX).read_text())
            return sorted({path / name for name in index["weight_map"].values()})
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise StdecError(f"{str(path / INDEX)!r} is corrupt: it needs a weight_map of "
                             "tensor names to shard files.") from None
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        other = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = (f" (found {', '.join(other)}: convert it to safetensors first, stdec never "
                "unpickles)") if other else ""
        raise StdecError(f"{str(path)!r} has no .safetensors weights{hint}.")
    return files


def model_class(raw: dict, path: str | Path = "the checkpoint") -> type[nn.Module]:
    """The model class a config.json names (by model_type or architectures)."""
    kind, archs = raw.get("model_type"), raw.get("architectures") or []
    lavida = lavida_class(raw)  # before LLaDA-V: LaViDa-LLaDA shares its model_type
    if lavida is not None:
        return lavida
    if kind == "llava_llada" or "LlavaLLaDAModelLM" in archs:  # LLaDA-V
        return LLaDAVModel
    if kind == "llada" or "LLaDAModelLM" in archs:
        return LLaDAModelLM
    if kind in ("Dream", "dream") or "DreamModel" in archs:
        return DreamModel
    raise StdecError(f"{str(path)!r} holds a {kind or archs!r} model; stdec loads LLaDA, "
                     "Dream, LLaDA-V and LaViDa checkpoints.")


def skeleton(raw: dict, path: str | Path = "the checkpoint") -> nn.Module:
    """The model a config.json describes, on the meta device: its shapes, no weights."""
    cls = model_class(raw, path)
    with torch.device("meta"):  # no random init: the weights come from the files
        return cls(CONFIGS[cls].from_dict(raw))


def load_model(path: str | Path, *, dtype: str | torch.dtype | None = None,
               device: str | torch.device | None = None) -> nn.Module:
    """Load a checkpoint folder onto `device` in `dtype`; never runs code from the folder."""
    path = Path(path)
    raw = read_config(path)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    model = skeleton(raw, path)
    cls = type(model)
    state = {}
    rename = getattr(cls, "from_checkpoint_name", str)  # a layout whose names differ from ours
    for file in weight_files(path):
        if not file.is_file():
            raise StdecError(f"weight shard {str(file)!r} named by the index is missing.")
        try:
            tensors = load_file(file, device="cpu")
        except (SafetensorError, OSError) as err:
            raise StdecError(f"weight file {str(file)!r} is corrupt or truncated ({err}).") \
                from None
        state.update((rename(name), t.to(device=device, dtype=dtype))
                     for name, t in tensors.items())
    expected = model.state_dict()
    missing, extra = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or extra:
        raise StdecError(
            f"weights in {str(path)!r} do not match its config.json: missing "
            f"{sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}."
        )
    for name, t in state.items():
        if t.shape != expected[name].shape:
            raise StdecError(f"tensor {name} in {str(path)!r} has shape {tuple(t.shape)}, "
                             f"config.json implies {tuple(expected[name].shape)}.")
    model.load_state_dict(state, assign=True)
    return model.eval()


def save_model(model: nn.Module, path: str | Path, *,
               max_shard_bytes: int | None = None):
    """Write config.json and safetensors weights, sharded with an index past max_shard_bytes."""
    if any(hasattr(p, "__tensor_flatten__") for p in model.parameters()):
        raise StdecError("save_model writes float weights, and this model's were quantized at "
                         "load; save the float model, and pass quantize when loading it.")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {**model.config.to_dict(), "torch_dtype": str(model.dtype).removeprefix("torch.")}
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    rename = getattr(model, "to_checkpoint_name", str)
    state = {rename(k): v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    shards: list[dict] = [{}]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    for old in [*path.glob("*.safetensors"), path / INDEX]:
        old.unlink(missing_ok=True)  # stale shards would be read as weights
    if len(shards) == 1:
        save_file(shards[0], path / "model.safetensors", metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, path / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / INDEX).write_text(json.dumps(index, indent=2) + "\n")
