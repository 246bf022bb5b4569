"""MATH answer extraction and equivalence: \\boxed{...} parsing, LaTeX normalisation, and a
numeric check that needs no sympy (1/2, \\frac{1}{2}, \\dfrac12 and 0.5 all match).

Numeric values come from a small whitelisted evaluator over the AST of a Python expression
built from the LaTeX, never from eval: model outputs are untrusted text.
"""

from __future__ import annotations

import ast
import cmath
import math
import random
import re

__all__ = ["extract_answer", "is_equiv", "last_boxed", "normalize"]

_MAX_EXPR = 300  # longer answers are compared as strings only
_REL_TOL = 1e-9


def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}) with balanced braces, or None."""
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i < 0:
        return None
    j = i + (6 if text.startswith("\\boxed", i) else 5)
    if text[j:j + 1] != "{":  # "\boxed 5": the token after the space
        m = re.match(r"\s+([^\s$]+)", text[j:])
        return m.group(1) if m else None
    group, _ = _group(text, j)
    return group


def extract_answer(text: str) -> str | None:
    """The final answer of a solution: the last \\boxed{...}, else the text after "answer is"."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    k = text.lower().rfind("answer is")
    if k < 0:
        return None
    rest = text[k + len("answer is"):].strip().lstrip(":").strip()
    rest = rest.split("\n", 1)[0].strip()
    rest = re.sub(r"\.\s.*$", "", rest)  # up to the end of the sentence
    return rest or None


def is_equiv(pred: str | None, gold: str) -> bool:
    """Whether two final answers are the same after normalisation, as values or element-wise."""
    if pred is None:
        return False
    return _equal(normalize(pred), normalize(gold))


# ---- normalisation ---------------------------------------------------------------------

_SPACES = ("\\!", "\\,", "\\;", "\\:", "\\ ", "\\quad", "\\qquad", "\\displaystyle")
_TEXT = re.compile(r"\\(?:text|textbf|textrm|textnormal|mbox|mathrm)\{([^{}]*)\}(\^\{?\d\}?)?")
_NUM = r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+|\\frac\{[^{}]*\}\{[^{}]*\})"


def _unwrap_text(m: re.Match) -> str:
    inner, before, after = m.group(1), m.string[: m.start()], m.string[m.end():]
    # a trailing word-only \text{...} after a value is a unit: "5\text{ cm}^2" -> "5"
    if before.strip() and re.fullmatch(r"[a-zA-Z\s.]*", inner) and not after.strip():
        return ""
    return inner + (m.group(2) or "")


def normalize(s: str) -> str:
    """A canonical string for a MATH answer (units, spacing and LaTeX variants removed)."""
    s = s.strip().replace("\n", " ")
    for sp in _SPACES:
        s = s.replace(sp, "")
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|°", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _TEXT.sub(_unwrap_text, s)
    m = re.fullmatch(rf"\s*({_NUM})\s+[a-zA-Z][a-zA-Z\s.]*(?:\^\{{?\d\}}?)?\s*", s)
    if m:  # "5 cm" -> "5"
        s = m.group(1)
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    # a mixed number, as MATH writes them: "1\frac{1}{2}" is 3/2, not 1 x 1/2
    s = re.sub(r"(?<![\w.}^])(\d+)\\frac\{(\d+)\}\{(\d+)\}",
               lambda m: f"\\frac{{{int(m[1]) * int(m[3]) + int(m[2])}}}{{{m[3]}}}", s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = re.sub(r"\^\{(\w)\}", r"^\1", s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):  # thousands separators
        s = s.replace(",", "")
    if s.count("=") == 1:  # "x=3" -> "3"
        lhs, rhs = s.split("=")
        if re.fullmatch(r"[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+", lhs):
            s = rhs
    s = re.sub(r"(?<![\d])\.(\d)", r"0.\1", s)  # ".5" -> "0.5"
    m = re.fullmatch(r"\(([A-Ea-e])\)", s)  # "(C)" -> "C"
    return m.group(1).upper() if m else s


# ---- comparison ------------------------------------------------------------------------

def _equal(a: str, b: str) -> bool:
    if a == b:
        return True
    if not a or not b:
        return False
    sa, sb = _split_seq(a), _split_seq(b)
    if sa or sb:
        if not (sa and sb) or sa[0] != sb[0] or len(sa[1]) != len(sb[1]):
            return False
        if sa[0] in ("", "{}"):  # bare lists of solutions and sets: any order
            rest = list(sb[1])
            for x in sa[1]:
                k = next((i for i, y in enumerate(rest) if _equal(x, y)), None)
                if k is None:
                    return False
                rest.pop(k)
            return True
        return all(_equal(x, y) for x, y in zip(sa[1], sb[1], strict=True))
    ea, eb = _to_expr(a), _to_expr(b)
    if ea is None or eb is None:
        return False
    names_a, names_b = _names(ea), _names(eb)
    if names_a is None or names_a != names_b:
        return False
    # no variables: one exact-enough value; with variables: the same at a few fixed points
    rng = random.Random(0)
    points = [{}] if not names_a else [
        {n: complex(rng.uniform(0.5, 2.5)) for n in names_a} for _ in range(3)]
    for env in points:
        va, vb = _eval(ea, env), _eval(eb, env)
        if va is None or vb is None or not _close(va, vb):
            return False
    return True


def _close(x: complex, y: complex) -> bool:
    return abs(x - y) <= _REL_TOL * max(1.0, abs(x), abs(y))


_OPEN, _CLOSE = "([{", ")]}"


def _split_seq(s: str) -> tuple[str, list[str]] | None:
    """(brackets, items) of a tuple, interval, set or bare comma list; None for one value."""
    brackets = ""
    if s.startswith("\\{") and s.endswith("\\}"):
        brackets, s = "{}", s[2:-2]
    elif s[0] in "([" and s[-1] in ")]" and _match(s, 0) == len(s) - 1:
        brackets, s = s[0] + s[-1], s[1:-1]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(s[start:i])
            start = i + 1
    items.append(s[start:])
    if len(items) == 1 and brackets in ("", "()"):
        return None  # one value, maybe in parentheses
    return brackets, items


def _match(s: str, i: int) -> int:
    """Index of the bracket closing the one at i (any kind: intervals mix them), or -1."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] in _OPEN:
            depth += 1
        elif s[j] in _CLOSE:
            depth -= 1
            if depth == 0:
                return j
    return -1


# ---- LaTeX -> expression -> value ------------------------------------------------------

def _group(s: str, i: int) -> tuple[str | None, int]:
    """The brace group (or single character) starting at i, and the index after it."""
    if i >= len(s):
        return None, i
    if s[i] != "{":
        return (s[i], i + 1) if s[i] not in "\\}" else (None, i)
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 1 : j], j + 1
    return None, i


def _latex(s: str) -> str | None:
    """\\frac, \\sqrt and ^ rewritten with parentheses (π, √ stand for pi and sqrt)."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i):
            num, i = _group(s, i + 5)
            den, i = _group(s, i) if num is not None else (None, i)
            if den is None:
                return None
            parts = _latex(num), _latex(den)
            if None in parts:
                return None
            out.append(f"(({parts[0]})/({parts[1]}))")
        elif s.startswith("\\sqrt", i):
            i += 5
            index = None
            if s[i:i + 1] == "[":
                j = s.find("]", i)
                if j < 0:
                    return None
                index, i = _latex(s[i + 1 : j]), j + 1
            arg, i = _group(s, i)
            inner = _latex(arg) if arg is not None else None
            if inner is None:
                return None
            out.append(f"√({inner})" if index is None else f"(({inner})^(1/({index})))")
        elif s[i] == "^":
            arg, i = _group(s, i + 1)
            inner = _latex(arg) if arg is not None else None
            if inner is None:
                return None
            out.append(f"^({inner})")
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


_TOKEN = re.compile(r"\d+\.?\d*|\.\d+|[a-zA-Zπ√]|[-+*/^()]")


def _to_expr(s: str) -> str | None:
    """A Python expression for a normalised answer, or None if it is not plain algebra."""
    if len(s) > _MAX_EXPR:
        return None
    for cmd, sym in (("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"), ("\\pi", "π")):
        s = s.replace(cmd, sym)
    t = _latex(s)
    if t is None:
        return None
    t = t.replace("{", "(").replace("}", ")")
    if "\\" in t or re.search(r"[a-zA-Z]{3,}", t):  # other commands, words
        return None
    tokens = _TOKEN.findall(t)
    if "".join(tokens) != t:
        return None  # characters outside algebra: = < | ! ...
    out: list[str] = []
    for tok in tokens:  # implicit multiplication: 2x, 2\sqrt{3}, (x+1)(x+2), 3\pi
        if out and (out[-1][-1].isalnum() or out[-1] in ")π.") and (
                tok[0].isalnum() or tok[0] in "π√(."):
            out.append("*")
        out.append(tok)
    return "".join(out).replace("^", "**").replace("π", "pi").replace("√", "sqrt")


def _names(expr: str) -> frozenset[str] | None:
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, RecursionError, ValueError):
        return None
    return frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                     and n.id not in ("pi", "sqrt"))


_BIN = {ast.Add: lambda x, y: x + y, ast.Sub: lambda x, y: x - y,
        ast.Mult: lambda x, y: x * y, ast.Div: lambda x, y: x / y}


def _eval(expr: str, env: dict[str, complex]) -> complex | None:
    try:
        return _node(ast.parse(expr, mode="eval").body, env)
    except (ArithmeticError, LookupError, ValueError, RecursionError, SyntaxError, TypeError):
        return None


def _node(n: ast.AST, env: dict[str, complex]) -> complex:
    if isinstance(n, ast.Constant) and isinstance(n.value, int | float):
        return complex(n.value)
    if isinstance(n, ast.Name):
        if n.id == "pi":
            return complex(math.pi)
        return env[n.id]
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
        v = _node(n.operand, env)
        return -v if isinstance(n.op, ast.USub) else v
    if isinstance(n, ast.BinOp):
        x, y = _node(n.left, env), _node(n.right, env)
        if isinstance(n.op, ast.Pow):
            if abs(y) > 64 or (x == 0 and y.real <= 0):
                raise ValueError("exponent out of range")
            if y.imag == 0 and y.real == int(y.real) and x.imag == 0:
                return complex(x.real ** int(y.real))  # exact for negative bases
            return x**y
        if type(n.op) in _BIN:
            return _BIN[type(n.op)](x, y)
    if (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "sqrt"
            and len(n.args) == 1 and not n.keywords):
        return cmath.sqrt(_node(n.args[0], env))
    raise ValueError(f"unsupported expression node {type(n).__name__}")
