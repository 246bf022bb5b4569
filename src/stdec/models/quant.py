"""Weight-only quantization at load, through torchao's own configs and kernels.

What is quantized: every linear layer of the language model's transformer blocks, fused
(FusedLinear) or not; with `head`, the output head too; with `embeddings`, the input
embedding table (QuantizedEmbedding). Norms, the embeddings and output head (by default) and
a vision-language model's vision tower and projector keep the model dtype. Activations stay
in the model dtype: only the weights are stored in fewer bits.

  int8  per-output-row int8 weights (torchao's Int8WeightOnlyConfig); any device
  int4  groupwise asymmetric int4 weights (groups of 128 inputs, or 64 or 32 where a layer
        is narrower); CUDA: torch's tinygemm kernel on bfloat16 weights, compute
        capability 8.0 and up (Int4WeightOnlyConfig, tile_packed_to_4d); CPU: torch's
        _weight_int4pack_mm_for_cpu (torchao's PrototypeInt4WeightOnlyConfig)

The embedding table is quantized by torchao's affine primitives to the values its own
configs give an nn.Embedding: int8 symmetric per row (Int8WeightOnlyConfig); int4 asymmetric,
a scale and a zero point per group of 128 values, or 64 or 32 where the rows are narrower
(IntxWeightOnlyConfig), stored two values a byte by torchao's bit packing. Those configs'
tensors look an id up by dequantizing the whole table (a gigabyte at LLaDA-8B's shape, every
forward); QuantizedEmbedding gathers the rows it is asked for and dequantizes those alone.

`check` refuses, in one sentence, what this machine cannot run (torchao missing or too old,
int4 without its kernel, a layer or an embedding table int4 cannot pack, an embedding table
that is also the output head) from the model's skeleton, before any weight is read;
`quantize` then rewrites the loaded model in place.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from importlib.metadata import PackageNotFoundError, version

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stdec.errors import StdecError
from stdec.models.layers import FusedLinear
from stdec.util import check_quantize

__all__ = ["TORCHAO_MIN", "QuantizedEmbedding", "check", "group_size", "quantize",
           "quantize_layer", "quiet_imports", "targets", "tensor_bytes", "weight_bytes"]

TORCHAO_MIN = (0, 18)  # the first torchao with a CPU int4 config (PrototypeInt4WeightOnlyConfig)
INT4_GROUPS = (128, 64, 32)  # inputs per int4 scale, the largest that divides a layer's width
CPU_INT4_ROWS = 16  # the CPU int4 packing takes layers whose outputs are a multiple of this
TABLE_ROWS = 8192  # an embedding table is quantized this many rows at a time: a small transient


def check(model: nn.Module, mode: str, device: torch.device, dtype: torch.dtype,
          head: bool = False, embeddings: bool = False):
    """Refuse, in one sentence naming what would work, a mode this machine cannot run on
    `model` (a skeleton on the meta device will do: only shapes are read)."""
    check_quantize(mode, head, embeddings)
    _require_torchao(mode)
    if device.type not in ("cpu", "cuda"):
        raise StdecError(f"quantize {mode} runs on the CPU or a CUDA GPU, not on "
                         f"{device.type!r}; pass device cpu or cuda.")
    layers = targets(model, head)
    if embeddings:
        table = embedding_table(model)
        if mode == "int4" and group_size(table.embedding_dim) is None:
            raise StdecError(
                f"quantize_embeddings with int4 takes rows whose width is a multiple of "
                f"{INT4_GROUPS[-1]}; {_name_of(model, table)} is {table.embedding_dim} wide; "
                "use quantize int8, or drop quantize_embeddings.")
    if mode == "int8":
        return
    if device.type == "cuda":
        if dtype != torch.bfloat16:
            raise StdecError(f"quantize int4 on CUDA runs torch's tinygemm kernel on bfloat16 "
                             f"weights, not {str(dtype).removeprefix('torch.')}; pass dtype "
                             "bfloat16 (the CUDA default), or quantize int8.")
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise StdecError(f"quantize int4 needs a CUDA GPU of compute capability 8.0 or "
                             f"later (tinygemm), this one is {major}.{minor}; use quantize "
                             "int8.")
        return
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") or not _has_cpu_int4():
        raise StdecError("quantize int4 on the CPU needs torch's CPU int4 kernel and torchao's "
                         "CPU int4 layout, which this torch or torchao lacks; use a CUDA GPU, "
                         "or quantize int8.")
    for name, layer in layers:
        rows, cols = layer.weight.shape
        if rows % CPU_INT4_ROWS or group_size(cols) is None:
            raise StdecError(
                f"quantize int4 on the CPU packs layers whose outputs are a multiple of "
                f"{CPU_INT4_ROWS} and inputs a multiple of {INT4_GROUPS[-1]}; {name} is "
                f"{cols} -> {rows}; use quantize int8, or a CUDA GPU.")


def targets(model: nn.Module, head: bool = False) -> list[tuple[str, nn.Module]]:
    """(name, layer) of what `quantize` rewrites: the linear layers inside the language
    model's blocks (model.blocks()), and with `head` its output head (model.output_head())."""
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.Linear | FusedLinear) and _in_blocks(name, model)]
    if head:
        out = model.output_head()
        if out is None:
            raise StdecError("quantize_head: this model ties its output head to the input "
                             "embeddings, which stay in the model dtype; drop quantize_head.")
        found.append((_name_of(model, out), out))
    return found


def embedding_table(model: nn.Module) -> nn.Embedding:
    """The language model's input embedding table (model.get_input_embeddings()); refused
    when the output head is that same table (tied), which keeps the model dtype."""
    if model.output_head() is None:
        raise StdecError("quantize_embeddings: this model ties its output head to the input "
                         "embeddings, and that one table stays in the model dtype; drop "
                         "quantize_embeddings.")
    return model.get_input_embeddings()


def quantize(model: nn.Module, mode: str, head: bool = False,
             embeddings: bool = False) -> nn.Module:
    """Replace the weights of targets(model, head) by torchao's quantized tensors and, with
    `embeddings`, the input embedding table by a QuantizedEmbedding, in place (call check
    first). Returns the model."""
    for _, layer in targets(model, head):
        quantize_layer(layer, mode)
    if embeddings:
        table = embedding_table(model)
        model.set_input_embeddings(QuantizedEmbedding(table.weight.detach(), mode))
    return model


class QuantizedEmbedding(nn.Module):
    """An embedding table stored as int8 (a scale per row) or packed int4 (a scale and zero
    point per group of group_size(width) values), quantized by torchao's affine primitives.
    A lookup gathers the looked-up rows' integers, scales and zero points and dequantizes
    those rows only, in the table's original dtype; an id out of range fails as nn.Embedding
    fails. Buffers, not parameters: nothing here is trained."""

    def __init__(self, table: Tensor, mode: str):
        super().__init__()
        prim, pack = _primitives()
        self.mode, self.dtype = mode, table.dtype
        self.num_embeddings, self.embedding_dim = table.shape
        # torchao's weight-only choices: int8 symmetric; int4 asymmetric, unsigned 0..15
        if mode == "int8":
            self.group, self.stored, self.low, self.high = self.embedding_dim, torch.int8, -128, 127
            mapping = prim.MappingType.SYMMETRIC
        else:
            self.group, self.stored, self.low, self.high = (group_size(self.embedding_dim),
                                                            torch.uint8, 0, 15)
            mapping = prim.MappingType.ASYMMETRIC
        block = (1, self.group)
        parts = []
        for rows in table.split(TABLE_ROWS):
            scale, zero = prim.choose_qparams_affine(
                rows, mapping, block, self.stored, self.low, self.high,
                eps=torch.finfo(torch.float32).eps, scale_dtype=torch.float32,
                zero_point_dtype=torch.int8, keepdim=True)
            q = prim.quantize_affine(rows, block, scale, zero, self.stored, self.low, self.high)
            if mode == "int4":
                (q,) = pack.pack(q, 4, dim=-1)  # two values a byte, each row on its own
            parts.append((q, scale, zero))
        qdata, scale, zero_point = (torch.cat(p) for p in zip(*parts, strict=True))
        self.register_buffer("qdata", qdata)  # (V, d) int8, or (V, d / 2) uint8 packed
        self.register_buffer("scale", scale)  # (V, d / group) float32
        self.register_buffer("zero_point", zero_point)  # (V, d / group) int8

    def forward(self, ids: Tensor) -> Tensor:
        # imported by __init__ (quietly): plain imports here, which torch.compile traces
        from torchao.prototype.dtypes.uintx.bitpacking import unpack
        from torchao.quantization.quant_primitives import dequantize_affine

        q = F.embedding(ids, self.qdata)  # (..., d) or (..., d / 2): the looked-up rows only
        if self.mode == "int4":
            q = unpack([q], 4, dim=-1)  # (..., d)
        block = (1,) * ids.dim() + (self.group,)
        return dequantize_affine(q, block, F.embedding(ids, self.scale),
                                 F.embedding(ids, self.zero_point), self.stored, self.low,
                                 self.high, output_dtype=self.dtype)  # (..., d)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, {self.mode}, "
                f"group={self.group}, dtype={str(self.dtype).removeprefix('torch.')}")


def quantize_layer(layer: nn.Module, mode: str) -> nn.Module:
    """One linear layer (nn.Linear or FusedLinear) quantized in place, on its own device."""
    ao = _import_torchao()
    config = _config(ao, mode, layer.weight.device, layer.weight.shape[1])
    ao.quantize_(layer, config, filter_fn=lambda m, _: m is layer)
    return layer


def weight_bytes(module: nn.Module) -> int:
    """Bytes the parameters and buffers of `module` take, a quantized weight counted by what
    it stores (its packed values, scales and zero points), not by the float shape it stands
    for."""
    return sum(tensor_bytes(t) for t in (*module.parameters(), *module.buffers()))


def tensor_bytes(t: torch.Tensor) -> int:
    if hasattr(t, "__tensor_flatten__"):  # a tensor subclass: the tensors it holds
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def group_size(width: int) -> int | None:
    """Inputs per int4 scale for a layer `width` inputs wide: the largest of INT4_GROUPS
    that divides it, None if none does."""
    return next((g for g in INT4_GROUPS if width % g == 0), None)


def _config(ao, mode: str, device: torch.device, width: int):
    """torchao's config for one layer. set_inductor_config=False: torchao would otherwise
    change torch.compile's global settings as a side effect of quantizing."""
    if mode == "int8":
        return ao.Int8WeightOnlyConfig(set_inductor_config=False)
    if device.type == "cuda":  # tinygemm pads the inputs to 1024: any width takes 128
        return ao.Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d",
                                       set_inductor_config=False)
    from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

    return PrototypeInt4WeightOnlyConfig(group_size=group_size(width), set_inductor_config=False)


def _in_blocks(name: str, model: nn.Module) -> bool:
    prefix = _name_of(model, model.blocks()) + "."
    return name.startswith(prefix)


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _require_torchao(mode: str):
    """torchao importable (found without importing it: that takes seconds) and recent enough."""
    try:
        found = version("torchao") if importlib.util.find_spec("torchao") else None
    except PackageNotFoundError:
        found = None
    if found is None:
        raise StdecError(f"quantize {mode} needs torchao, which is not installed; install it "
                         "with pip install 'stdec[quant]', or load without quantize.")
    numbers = tuple(int(p) for p in found.split("+")[0].split(".")[:2] if p.isdigit())
    if numbers < TORCHAO_MIN:
        floor = ".".join(map(str, TORCHAO_MIN))
        raise StdecError(f"quantize {mode} needs torchao >= {floor}, found {found}; upgrade it "
                         "with pip install -U 'stdec[quant]'.")


def _has_cpu_int4() -> bool:
    try:
        with quiet_imports():
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig  # noqa: F401
    except ImportError:
        return False
    return True


def _primitives():
    """torchao's affine quantization primitives and its bit packing (import once, quietly)."""
    with quiet_imports():
        import torchao.prototype.dtypes.uintx.bitpacking as pack
        import torchao.quantization.quant_primitives as prim
    return prim, pack


def _import_torchao():
    with quiet_imports():
        import torchao.quantization as ao
    return ao


@contextlib.contextmanager
def quiet_imports():
    """torchao's import warns that extensions it ships for other machines did not load (and
    torch about two of its enums); none concerns weight-only quantization, so those loggers
    are raised to errors for the import and put back after. transformers imports torchao,
    when installed, as it builds a model: the SigLIP tower's import goes through here too."""
    loggers = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
