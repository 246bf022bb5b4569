"""The layers of src/stdec, top to bottom: faces -> harness -> api -> decoding -> models. A
module imports only from its own layer or below (function-level imports included), and
nothing in src/ imports benchmarks/ or experiments/."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "stdec"
# module prefix -> layer, most specific first; a higher number is a higher layer
LAYERS = (
    ("stdec.errors", 0), ("stdec.util", 0),  # leaves every layer may use
    ("stdec.models", 1),
    ("stdec.decoding", 2),
    ("stdec.api", 3),
    ("stdec.bench", 4), ("stdec.tune", 4), ("stdec.viz", 4), ("stdec.paper", 4),
    ("stdec.tasks", 4), ("stdec.lm_eval", 4), ("stdec.testbed", 4), ("stdec.testing", 4),
    ("stdec.cli", 5), ("stdec.serve", 5), ("stdec.__main__", 5), ("stdec", 5),
)
OUTSIDE = ("benchmarks", "experiments")


def layer(module: str) -> int:
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    raise AssertionError(f"{module} has no layer: add it to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative ones resolved."""
    package = module_name(path) if path.name == "__init__.py" else \
        module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from stdec import tasks` imports the submodule stdec.tasks
            out += [(node.lineno, f"{base}.{a.name}" if base == "stdec" else base)
                    for a in node.names]
    return out


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(SRC)) for p in FILES])
def test_no_module_imports_upward(path):
    own = layer(module_name(path))
    for line, name in imports(path):
        assert name.split(".")[0] not in OUTSIDE, f"{path.name}:{line} imports {name}"
        if name == "stdec" or name.startswith("stdec."):
            assert layer(name) <= own, (f"{module_name(path)} (layer {own}) imports {name} "
                                        f"(layer {layer(name)}) at line {line}")
