"""MATH answers judged by math-verify (Hugging Face's answer verifier), as the field scores
them: the gold answer parsed as LaTeX from `\\boxed{gold}`, the prediction parsed from the
whole output with math-verify's LaTeX and plain-expression extraction, then
`verify(gold, prediction)`. These are the settings of math-verify's own MATH-500 task.

math-verify is an optional extra (`pip install 'stdec[math]'`); a task scored by it refuses
to start without it (`require_math_verify`), so no score ever comes from another judge.

Its time limits use SIGALRM, which only the main thread may set. Off the main thread a
judgement runs in a worker process (one, started on first use), whose main thread keeps
those limits; a worker that still hangs is killed and the answer counts as wrong.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
from multiprocessing.connection import Connection

from stdec.errors import StdecError

__all__ = ["equivalent", "last_boxed", "require_math_verify", "score_output"]

TIMEOUT_S = 5  # math-verify's limit per parse and per comparison
_BACKSTOP_S = 120  # the worker's whole judgement (two parses, a few comparisons, start-up)


def require_math_verify(task: str) -> None:
    """Refuse, in one sentence, a task scored by math-verify when it is not installed."""
    try:
        import math_verify  # noqa: F401
    except ImportError:
        raise StdecError(f"task {task!r} is scored by math-verify, which is not installed; "
                         f"pip install 'stdec[math]'.") from None


def score_output(output: str, gold: str) -> bool:
    """Whether a model's whole output states the gold answer (a MATH500 `answer` field)."""
    return _judge(output, gold, True)


def equivalent(pred: str, gold: str) -> bool:
    """Whether an answer already extracted from an output equals the gold one."""
    return _judge(pred, gold, False)


def _judge(pred: str, gold: str, whole_output: bool) -> bool:
    if threading.current_thread() is threading.main_thread():
        return _judge_here(pred, gold, whole_output, TIMEOUT_S)
    return _judge_in_worker(pred, gold, whole_output, TIMEOUT_S)


def _judge_here(pred: str, gold: str, whole_output: bool, timeout_s: int) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    both = (LatexExtractionConfig(), ExprExtractionConfig())
    boxed_first = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
    gold_parsed = parse(f"\\boxed{{{gold}}}", boxed_first, parsing_timeout=timeout_s)
    text = pred if whole_output else f"\\boxed{{{pred}}}"
    pred_parsed = parse(text, both if whole_output else boxed_first, parsing_timeout=timeout_s)
    return bool(gold_parsed and pred_parsed) and verify(gold_parsed, pred_parsed,
                                                         timeout_seconds=timeout_s)


# ---- off the main thread: one worker process -------------------------------------------

_worker: tuple[multiprocessing.Process, Connection] | None = None
_worker_lock = threading.Lock()


def _serve(conn: Connection) -> None:
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        conn.send(_judge_here(*args))


def _judge_in_worker(pred: str, gold: str, whole_output: bool, timeout_s: int) -> bool:
    global _worker
    with _worker_lock:
        if _worker is None or not _worker[0].is_alive():
            ctx = multiprocessing.get_context("spawn")  # fork is unsafe beside torch's threads
            here, there = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(there,), name="stdec-math-verify",
                               daemon=True)
            proc.start()
            there.close()
            _worker = (proc, here)
        proc, conn = _worker
        try:
            conn.send((pred, gold, whole_output, timeout_s))
            if conn.poll(_BACKSTOP_S):
                return bool(conn.recv())
        except (EOFError, OSError):  # the worker died: the next call starts another
            pass
        proc.kill()
        proc.join()
        _worker = None
        return False


# ---- the string of the last \boxed{} ---------------------------------------------------
# Kept by hand because math-verify has no equivalent: it returns parsed values, while the
# MathVista, MathVerse and MathVision rule ports work on the answer's text.

def last_boxed(text: str) -> str | None:
    """The contents of the last \\boxed{...} (or \\fbox{...}) with balanced braces, or None."""
    i = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if i < 0:
        return None
    j = i + (6 if text.startswith("\\boxed", i) else 5)
    if text[j:j + 1] != "{":  # "\boxed 5": the token after the space
        m = re.match(r"\s+([^\s$]+)", text[j:])
        return m.group(1) if m else None
    depth = 0
    for k in range(j, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[j + 1 : k]
    return None
