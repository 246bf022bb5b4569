"""`code`: small Python functions from a one-line spec; scored by hidden asserts in a sandbox."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest

from stdec.tasks.base import Problem, Task
from stdec.tasks.sandbox import run_code

ARGS = {  # argument names per input kind
    "list": ("xs", "nums", "items", "values", "arr", "lst", "data", "numbers", "seq", "vals"),
    "str": ("s", "text", "word", "string", "line", "phrase", "txt", "w"),
    "int": ("n", "x", "num", "m", "value", "number", "z", "t"),
    "int2": (("a", "b"), ("x", "y"), ("m", "n"), ("p", "q"), ("u", "v"), ("first", "second"),
             ("left", "right")),
}
LOOP_VARS = {"list": ("x", "v", "n", "item", "e", "y", "val"), "str": ("c", "ch", "char", "letter")}
ACCS = ("result", "res", "acc", "out", "total")
OPENERS = (
    "Write a function `{sig}` that {spec}.",
    "Write a Python function `{sig}` that {spec}.",
    "Define `{sig}` so that it {spec}.",
    "Implement `{sig}`, which {spec}.",
)
WORD_PAIRS = (("Fizz", "Buzz"), ("Foo", "Bar"), ("Ping", "Pong"), ("Tic", "Tac"), ("Zip", "Zap"),
              ("Bim", "Bam"))
LETTERS = "abcdeilmnorstu"


def _list(r: random.Random, lo: int = -9, hi: int = 30, n0: int = 0, n1: int = 6) -> list[int]:
    return [r.randint(lo, hi) for _ in range(r.randint(n0, n1))]


def _word(r: random.Random, n0: int = 0, n1: int = 8) -> str:
    return "".join(r.choice(LETTERS) for _ in range(r.randint(n0, n1)))


def _palindrome(r: random.Random) -> str:
    w = _word(r, 0, 4)
    return w + r.choice(["", r.choice(LETTERS)]) + w[::-1] if r.random() < 0.5 else _word(r)


def _sentence(r: random.Random) -> str:
    return " ".join(_word(r, 1, 6) for _ in range(r.randint(0, 5)))


def _with(r: random.Random, k: int, lo: int = -9, hi: int = 30) -> list[int]:
    """A list that holds k about half the time, so membership asserts are not all False."""
    xs = _list(r, lo, hi)
    if r.random() < 0.5:
        xs.insert(r.randint(0, len(xs)), k)
    return xs


def _fizz_consts(r: random.Random) -> dict:
    k1, k2 = r.sample(range(2, 8), 2)
    w1, w2 = r.choice(WORD_PAIRS)
    return {"k1": k1, "k2": k2, "w1": w1, "w2": w2}


def _fizz(n: int, k1: int, k2: int, w1: str, w2: str) -> str:
    return (w1 if n % k1 == 0 else "") + (w2 if n % k2 == 0 else "") or str(n)


def _clamp_consts(r: random.Random) -> dict:
    lo = r.randint(0, 10)
    return {"lo": lo, "hi": lo + r.randint(5, 30)}


def _k(lo: int, hi: int) -> Callable[[random.Random], dict]:
    return lambda r: {"k": r.randint(lo, hi)}


def _ch(r: random.Random) -> dict:
    return {"ch": r.choice("aeilnorst")}


Inputs = Callable[[random.Random, dict], tuple]


def _nonempty(r: random.Random, c: dict) -> tuple:
    return (_list(r, n0=1),)


@dataclass(frozen=True)
class Family:
    """One kind of function. Styles are sources with {f} name, {a}/{b} args, {v} loop var,
    {r} accumulator and the family's constants; `ref(*args, **consts)` gives expected values."""

    name: str
    kind: str  # "list" | "str" | "int" | "int2": picks argument names and default inputs
    fnames: tuple[str, ...]
    spec: str  # completes "a function ... that {spec}"
    styles: tuple[str, ...]
    ref: Callable[..., object]
    consts: Callable[[random.Random], dict] = lambda r: {}
    inputs: Inputs | None = None


DEFAULT_INPUTS: dict[str, Inputs] = {
    "list": lambda r, c: (_list(r),),
    "str": lambda r, c: (_word(r),),
    "int": lambda r, c: (r.randint(0, 12),),
    "int2": lambda r, c: (r.randint(-20, 50), r.randint(-20, 50)),
}

_LOOP_SUM = ("def {f}({a}):\n    {r} = 0\n    for {v} in {a}:\n        if {cond}:\n"
             "            {r} += 1\n    return {r}")
F = Family
FAMILIES: tuple[Family, ...] = (
    F("sum", "list", ("add_all", "sum_list", "list_sum", "sum_all", "total_of", "add_up"),
      "returns the sum of the numbers in {a}",
      ("def {f}({a}):\n    return sum({a})",
       "def {f}({a}):\n    {r} = 0\n    for {v} in {a}:\n        {r} += {v}\n    return {r}"),
      sum),
    F("max", "list", ("largest", "max_of", "find_max", "biggest", "max_value", "get_max"),
      "returns the largest number in the non-empty list {a}",
      ("def {f}({a}):\n    return max({a})",
       ("def {f}({a}):\n    {r} = {a}[0]\n    for {v} in {a}:\n        if {v} > {r}:\n"
        "            {r} = {v}\n    return {r}"),
       "def {f}({a}):\n    return sorted({a})[-1]"),
      max, inputs=_nonempty),
    F("min", "list", ("smallest", "min_of", "find_min", "lowest", "min_value", "get_min"),
      "returns the smallest number in the non-empty list {a}",
      ("def {f}({a}):\n    return min({a})",
       ("def {f}({a}):\n    {r} = {a}[0]\n    for {v} in {a}:\n        if {v} < {r}:\n"
        "            {r} = {v}\n    return {r}"),
       "def {f}({a}):\n    return sorted({a})[0]"),
      min, inputs=_nonempty),
    F("count_even", "list", ("count_evens", "num_even", "even_count", "how_many_even", "evens"),
      "returns how many numbers in {a} are even",
      ("def {f}({a}):\n    return sum(1 for {v} in {a} if {v} % 2 == 0)",
       "def {f}({a}):\n    return len([{v} for {v} in {a} if {v} % 2 == 0])",
       _LOOP_SUM.replace("{cond}", "{v} % 2 == 0")),
      lambda xs: sum(x % 2 == 0 for x in xs)),
    F("count_gt", "list", ("count_above", "count_greater", "num_above", "how_many_above",
                           "count_big", "above_count"),
      "returns how many numbers in {a} are greater than {k}",
      ("def {f}({a}):\n    return sum(1 for {v} in {a} if {v} > {k})",
       _LOOP_SUM.replace("{cond}", "{v} > {k}")),
      lambda xs, k: sum(x > k for x in xs), _k(0, 20)),
    F("sum_squares", "list", ("sum_squares", "square_sum", "sum_of_squares", "squares_total",
                              "sq_sum"),
      "returns the sum of the squares of the numbers in {a}",
      ("def {f}({a}):\n    return sum({v} * {v} for {v} in {a})",
       "def {f}({a}):\n    {r} = 0\n    for {v} in {a}:\n        {r} += {v} ** 2\n    return {r}"),
      lambda xs: sum(x * x for x in xs)),
    F("filter_gt", "list", ("keep_above", "filter_above", "above", "only_big", "greater_than",
                            "select_above"),
      "returns a list of the numbers in {a} that are greater than {k}, in their original order",
      ("def {f}({a}):\n    return [{v} for {v} in {a} if {v} > {k}]",
       ("def {f}({a}):\n    {r} = []\n    for {v} in {a}:\n        if {v} > {k}:\n"
        "            {r}.append({v})\n    return {r}"),
       "def {f}({a}):\n    return list(filter(lambda {v}: {v} > {k}, {a}))"),
      lambda xs, k: [x for x in xs if x > k], _k(0, 20)),
    F("scale", "list", ("scale", "times_all", "multiply_all", "scaled", "mul_each", "scale_list"),
      "returns a new list with each number in {a} multiplied by {k}",
      ("def {f}({a}):\n    return [{v} * {k} for {v} in {a}]",
       ("def {f}({a}):\n    {r} = []\n    for {v} in {a}:\n        {r}.append({v} * {k})\n"
        "    return {r}"),
       "def {f}({a}):\n    return list(map(lambda {v}: {v} * {k}, {a}))"),
      lambda xs, k: [x * k for x in xs], _k(2, 12)),
    F("shift", "list", ("shift", "add_to_all", "plus_each", "shifted", "add_each", "offset"),
      "returns a new list with {k} added to each number in {a}",
      ("def {f}({a}):\n    return [{v} + {k} for {v} in {a}]",
       ("def {f}({a}):\n    {r} = []\n    for {v} in {a}:\n        {r}.append({v} + {k})\n"
        "    return {r}")),
      lambda xs, k: [x + k for x in xs], _k(1, 30)),
    F("contains", "list", ("contains", "has_value", "includes", "has_item", "is_member",
                           "appears"),
      "returns True if {k} is in {a}, otherwise False",
      ("def {f}({a}):\n    return {k} in {a}",
       ("def {f}({a}):\n    for {v} in {a}:\n        if {v} == {k}:\n            return True\n"
        "    return False")),
      lambda xs, k: k in xs, _k(0, 20), lambda r, c: (_with(r, c["k"]),)),
    F("index_of", "list", ("index_of", "find_index", "position", "first_index", "locate",
                           "where_is"),
      "returns the index of the first {k} in {a}, or -1 if {k} is not in {a}",
      (("def {f}({a}):\n    for i in range(len({a})):\n        if {a}[i] == {k}:\n"
        "            return i\n    return -1"),
       ("def {f}({a}):\n    for i, {v} in enumerate({a}):\n        if {v} == {k}:\n"
        "            return i\n    return -1"),
       "def {f}({a}):\n    return {a}.index({k}) if {k} in {a} else -1"),
      lambda xs, k: xs.index(k) if k in xs else -1, _k(0, 20), lambda r, c: (_with(r, c["k"]),)),
    F("product", "list", ("product", "multiply", "prod_all", "product_of", "mul_all"),
      "returns the product of the numbers in {a} (1 for an empty list)",
      ("def {f}({a}):\n    {r} = 1\n    for {v} in {a}:\n        {r} *= {v}\n    return {r}",
       "import math\n\n\ndef {f}({a}):\n    return math.prod({a})"),
      math.prod, inputs=lambda r, c: (_list(r, -5, 9, 0, 5),)),
    F("spread", "list", ("spread", "value_range", "max_minus_min", "span", "range_of", "gap"),
      "returns the largest number in the non-empty list {a} minus the smallest",
      ("def {f}({a}):\n    return max({a}) - min({a})",
       "def {f}({a}):\n    {r} = sorted({a})\n    return {r}[-1] - {r}[0]"),
      lambda xs: max(xs) - min(xs), inputs=_nonempty),
    F("all_above", "list", ("all_above", "all_greater", "every_above", "all_big", "above_all"),
      "returns True if every number in {a} is greater than {k}, otherwise False",
      ("def {f}({a}):\n    return all({v} > {k} for {v} in {a})",
       ("def {f}({a}):\n    for {v} in {a}:\n        if {v} <= {k}:\n            return False\n"
        "    return True")),
      lambda xs, k: all(x > k for x in xs), _k(-5, 10),
      lambda r, c: (_list(r, c["k"] - 2, c["k"] + 20),)),
    F("any_div", "list", ("any_divisible", "has_multiple", "some_divisible", "any_multiple"),
      "returns True if some number in {a} is divisible by {k}, otherwise False",
      ("def {f}({a}):\n    return any({v} % {k} == 0 for {v} in {a})",
       ("def {f}({a}):\n    for {v} in {a}:\n        if {v} % {k} == 0:\n            return True\n"
        "    return False")),
      lambda xs, k: any(x % k == 0 for x in xs), _k(2, 9)),
    F("sum_odd", "list", ("sum_odd", "odd_sum", "add_odds", "odd_total", "sum_of_odds"),
      "returns the sum of the odd numbers in {a}",
      ("def {f}({a}):\n    return sum({v} for {v} in {a} if {v} % 2 == 1)",
       ("def {f}({a}):\n    {r} = 0\n    for {v} in {a}:\n        if {v} % 2 == 1:\n"
        "            {r} += {v}\n    return {r}")),
      lambda xs: sum(x for x in xs if x % 2)),
    F("count_eq", "list", ("count_of", "occurrences", "count_value", "how_many", "tally"),
      "returns how many times {k} appears in {a}",
      ("def {f}({a}):\n    return {a}.count({k})",
       _LOOP_SUM.replace("{cond}", "{v} == {k}"),
       "def {f}({a}):\n    return sum(1 for {v} in {a} if {v} == {k})"),
      lambda xs, k: xs.count(k), _k(0, 9), lambda r, c: (_list(r, 0, 9, 0, 8),)),
    F("last_or", "list", ("last_or", "last_item", "final", "last_value", "get_last"),
      "returns the last number in {a}, or {k} if {a} is empty",
      ("def {f}({a}):\n    return {a}[-1] if {a} else {k}",
       "def {f}({a}):\n    if not {a}:\n        return {k}\n    return {a}[-1]"),
      lambda xs, k: xs[-1] if xs else k, _k(-1, 9)),
    F("reverse", "str", ("reverse", "reversed_text", "backwards", "flip", "rev", "mirror"),
      "returns {a} reversed",
      ("def {f}({a}):\n    return {a}[::-1]",
       "def {f}({a}):\n    return ''.join(reversed({a}))",
       "def {f}({a}):\n    {r} = ''\n    for {v} in {a}:\n        {r} = {v} + {r}\n    return {r}"),
      lambda s: s[::-1]),
    F("palindrome", "str", ("is_palindrome", "palindrome", "is_pal", "reads_same",
                            "check_palindrome"),
      "returns True if {a} reads the same forwards and backwards, otherwise False",
      ("def {f}({a}):\n    return {a} == {a}[::-1]",
       ("def {f}({a}):\n    i, j = 0, len({a}) - 1\n    while i < j:\n"
        "        if {a}[i] != {a}[j]:\n            return False\n        i += 1\n        j -= 1\n"
        "    return True"),
       "def {f}({a}):\n    return list({a}) == list(reversed({a}))"),
      lambda s: s == s[::-1], inputs=lambda r, c: (_palindrome(r),)),
    F("count_vowels", "str", ("count_vowels", "vowel_count", "num_vowels", "vowels"),
      "returns how many vowels (a, e, i, o, u) are in the lowercase string {a}",
      ("def {f}({a}):\n    return sum(1 for {v} in {a} if {v} in 'aeiou')",
       _LOOP_SUM.replace("{cond}", "{v} in 'aeiou'"),
       "def {f}({a}):\n    return len([{v} for {v} in {a} if {v} in 'aeiou'])"),
      lambda s: sum(c in "aeiou" for c in s)),
    F("count_char", "str", ("count_char", "char_count", "count_letter", "letter_count",
                            "times_seen"),
      "returns how many times the letter '{ch}' appears in {a}",
      ("def {f}({a}):\n    return {a}.count('{ch}')",
       _LOOP_SUM.replace("{cond}", "{v} == '{ch}'")),
      lambda s, ch: s.count(ch), _ch),
    F("remove_char", "str", ("remove_char", "strip_letter", "drop_char", "without",
                             "remove_letter"),
      "returns {a} with every '{ch}' removed",
      ("def {f}({a}):\n    return {a}.replace('{ch}', '')",
       "def {f}({a}):\n    return ''.join({v} for {v} in {a} if {v} != '{ch}')",
       ("def {f}({a}):\n    {r} = ''\n    for {v} in {a}:\n        if {v} != '{ch}':\n"
        "            {r} += {v}\n    return {r}")),
      lambda s, ch: s.replace(ch, ""), _ch),
    F("count_words", "str", ("count_words", "word_count", "num_words", "words_in"),
      "returns the number of words in {a}, where words are separated by single spaces",
      ("def {f}({a}):\n    return len({a}.split())",
       "def {f}({a}):\n    {r} = 0\n    for _ in {a}.split():\n        {r} += 1\n    return {r}",
       "def {f}({a}):\n    return len([{v} for {v} in {a}.split(' ') if {v}])"),
      lambda s: len(s.split()), inputs=lambda r, c: (_sentence(r),)),
    F("upper", "str", ("shout", "to_upper", "upper", "loud", "caps", "make_upper"),
      "returns {a} in upper case",
      ("def {f}({a}):\n    return {a}.upper()",
       "def {f}({a}):\n    return ''.join({v}.upper() for {v} in {a})"),
      str.upper),
    F("first_k", "str", ("first_chars", "prefix", "head", "take_first", "start_of"),
      "returns the first {k} characters of {a} (all of {a} if it is shorter)",
      ("def {f}({a}):\n    return {a}[:{k}]",
       ("def {f}({a}):\n    {r} = ''\n    for i in range(min({k}, len({a}))):\n"
        "        {r} += {a}[i]\n    return {r}")),
      lambda s, k: s[:k], _k(1, 6)),
    F("repeat", "str", ("repeat", "repeat_text", "echo", "copies", "duplicate"),
      "returns {a} repeated {k} times",
      ("def {f}({a}):\n    return {a} * {k}",
       "def {f}({a}):\n    {r} = ''\n    for _ in range({k}):\n        {r} += {a}\n    return {r}"),
      lambda s, k: s * k, _k(2, 5), lambda r, c: (_word(r, 0, 4),)),
    F("factorial", "int", ("factorial", "fact", "fac", "factorial_of", "product_up_to"),
      "returns the factorial of {a} ({a} >= 0)",
      (("def {f}({a}):\n    {r} = 1\n    for i in range(2, {a} + 1):\n        {r} *= i\n"
        "    return {r}"),
       "def {f}({a}):\n    if {a} <= 1:\n        return 1\n    return {a} * {f}({a} - 1)",
       "import math\n\n\ndef {f}({a}):\n    return math.prod(range(1, {a} + 1))"),
      math.factorial, inputs=lambda r, c: (r.randint(0, 8),)),
    F("fizz", "int", ("fizz", "fizzbuzz", "say", "label", "call_out"),
      "returns '{w1}{w2}' if {a} is divisible by both {k1} and {k2}, '{w1}' if only by {k1}, "
      "'{w2}' if only by {k2}, and otherwise {a} as a string",
      (("def {f}({a}):\n    if {a} % {k1} == 0 and {a} % {k2} == 0:\n        return '{w1}{w2}'\n"
        "    if {a} % {k1} == 0:\n        return '{w1}'\n    if {a} % {k2} == 0:\n"
        "        return '{w2}'\n    return str({a})"),
       ("def {f}({a}):\n    {r} = ''\n    if {a} % {k1} == 0:\n        {r} += '{w1}'\n"
        "    if {a} % {k2} == 0:\n        {r} += '{w2}'\n    return {r} or str({a})")),
      _fizz, _fizz_consts,
      lambda r, c: (r.choice([c["k1"] * c["k2"], c["k1"], c["k2"], 1]) * r.randint(1, 9),)),
    F("clamp", "int", ("clamp", "limit", "bound", "clip", "keep_in_range", "squeeze"),
      "returns {a} limited to the range from {lo} to {hi}",
      ("def {f}({a}):\n    return max({lo}, min({hi}, {a}))",
       ("def {f}({a}):\n    if {a} < {lo}:\n        return {lo}\n    if {a} > {hi}:\n"
        "        return {hi}\n    return {a}"),
       "def {f}({a}):\n    return sorted([{lo}, {a}, {hi}])[1]"),
      lambda x, lo, hi: max(lo, min(hi, x)), _clamp_consts, lambda r, c: (r.randint(-10, 50),)),
    F("sum_to", "int", ("sum_to", "triangle", "sum_up_to", "add_up_to", "sum_range"),
      "returns the sum of the whole numbers from 1 to {a}",
      ("def {f}({a}):\n    return sum(range(1, {a} + 1))",
       "def {f}({a}):\n    return {a} * ({a} + 1) // 2",
       ("def {f}({a}):\n    {r} = 0\n    for i in range(1, {a} + 1):\n        {r} += i\n"
        "    return {r}")),
      lambda n: n * (n + 1) // 2, inputs=lambda r, c: (r.randint(0, 50),)),
    F("divisible", "int", ("divisible", "is_multiple", "divides", "is_divisible", "multiple_of"),
      "returns True if {a} is divisible by {k}, otherwise False",
      ("def {f}({a}):\n    return {a} % {k} == 0",
       "def {f}({a}):\n    if {a} % {k} == 0:\n        return True\n    return False"),
      lambda n, k: n % k == 0, _k(2, 12),
      lambda r, c: (r.randint(0, 60) if r.random() < 0.5 else c["k"] * r.randint(0, 9),)),
    F("digit_sum", "int", ("digit_sum", "sum_digits", "add_digits", "digits_total"),
      "returns the sum of the digits of the non-negative integer {a}",
      ("def {f}({a}):\n    return sum(int(d) for d in str({a}))",
       ("def {f}({a}):\n    {r} = 0\n    while {a} > 0:\n        {r} += {a} % 10\n"
        "        {a} //= 10\n    return {r}")),
      lambda n: sum(map(int, str(n))), inputs=lambda r, c: (r.randint(0, 9999),)),
    F("fib", "int", ("fib", "fibonacci", "fibo", "nth_fib", "fib_number"),
      "returns the Fibonacci number at index {a}, where the sequence starts 0, 1, 1, 2, 3",
      (("def {f}({a}):\n    p, q = 0, 1\n    for _ in range({a}):\n        p, q = q, p + q\n"
        "    return p"),
       ("def {f}({a}):\n    if {a} < 2:\n        return {a}\n"
        "    return {f}({a} - 1) + {f}({a} - 2)")),
      lambda n: round(((1 + 5**0.5) / 2) ** n / 5**0.5), inputs=lambda r, c: (r.randint(0, 15),)),
    F("count_multiples", "int", ("count_multiples", "multiples", "num_multiples",
                                 "multiples_up_to"),
      "returns how many of the numbers from 1 to {a} are divisible by {k}",
      ("def {f}({a}):\n    return {a} // {k}",
       "def {f}({a}):\n    return sum(1 for i in range(1, {a} + 1) if i % {k} == 0)",
       ("def {f}({a}):\n    {r} = 0\n    for i in range(1, {a} + 1):\n        if i % {k} == 0:\n"
        "            {r} += 1\n    return {r}")),
      lambda n, k: n // k, _k(2, 9), lambda r, c: (r.randint(0, 60),)),
    F("power", "int", ("power", "pow_k", "raise_to", "to_power", "exponent"),
      "returns {a} raised to the power {k}",
      ("def {f}({a}):\n    return {a} ** {k}",
       "def {f}({a}):\n    {r} = 1\n    for _ in range({k}):\n        {r} *= {a}\n    return {r}"),
      lambda x, k: x**k, _k(2, 5), lambda r, c: (r.randint(-5, 9),)),
    F("abs_diff", "int2", ("abs_diff", "distance", "diff", "how_far", "difference"),
      "returns the absolute difference between {a} and {b}",
      ("def {f}({a}, {b}):\n    return abs({a} - {b})",
       "def {f}({a}, {b}):\n    if {a} > {b}:\n        return {a} - {b}\n    return {b} - {a}"),
      lambda x, y: abs(x - y)),
    F("larger", "int2", ("larger", "bigger", "max2", "pick_max", "greater", "max_of_two"),
      "returns the larger of {a} and {b}",
      ("def {f}({a}, {b}):\n    return max({a}, {b})",
       "def {f}({a}, {b}):\n    return {a} if {a} > {b} else {b}",
       "def {f}({a}, {b}):\n    if {a} > {b}:\n        return {a}\n    return {b}"),
      max),
    F("gcd", "int2", ("gcd", "common_divisor", "greatest_divisor", "hcf", "gcd_of"),
      "returns the greatest common divisor of the positive integers {a} and {b}",
      ("import math\n\n\ndef {f}({a}, {b}):\n    return math.gcd({a}, {b})",
       "def {f}({a}, {b}):\n    while {b}:\n        {a}, {b} = {b}, {a} % {b}\n    return {a}"),
      math.gcd, inputs=lambda r, c: (r.randint(1, 60), r.randint(1, 60))),
)


def extract_code(output: str) -> str:
    """The code in a model output: the first fenced block if there is one, else all of it."""
    m = re.search(r"```(?:python)?\n(.*?)(?:```|$)", output, re.DOTALL)
    return m.group(1) if m else output


def build(fam: Family, rng: random.Random, style: int | None = None) -> tuple[str, str, list[str]]:
    """A random problem of one family as (prompt, answer in `style` or a random one, asserts)."""
    consts = fam.consts(rng)
    names = rng.choice(ARGS[fam.kind])
    args = names if fam.kind == "int2" else (names,)
    f = rng.choice(fam.fnames)
    fill = {"f": f, "a": args[0], "b": args[-1], "r": rng.choice(ACCS), **consts,
            "v": rng.choice([v for v in LOOP_VARS.get(fam.kind, ("v", "e")) if v not in args])}
    spec = fam.spec.format_map(fill)
    prompt = rng.choice(OPENERS).format(sig=f"{f}({', '.join(args)})", spec=spec)
    answer = fam.styles[rng.randrange(len(fam.styles)) if style is None else style]
    gen = fam.inputs or DEFAULT_INPUTS[fam.kind]
    pool: dict[str, object] = {}  # distinct inputs -> expected value
    for _ in range(40):
        x = gen(rng, consts)
        pool.setdefault(", ".join(map(repr, x)), fam.ref(*x, **consts))
        if len(pool) == 8:
            break
    # round-robin over expected values, so a constant function cannot pass all asserts
    groups: dict[str, list[str]] = {}
    for x, y in pool.items():
        groups.setdefault(repr(y), []).append(x)
    picked = [x for xs in zip_longest(*groups.values()) for x in xs if x is not None][:4]
    return prompt, answer.format_map(fill), [f"assert {f}({x}) == {pool[x]!r}" for x in picked]


class CodeTask(Task):
    name = "code"
    gen_length = 96
    timeout = 5.0
    unsandboxed = False  # True (--allow-unsandboxed-code): run without the kernel sandbox

    def sample(self, rng: random.Random) -> tuple[str, str, str, dict]:
        fam = rng.choice(FAMILIES)
        prompt, answer, tests = build(fam, rng)
        # the key is the prompt: function name, argument names and constants all vary
        return prompt, prompt, answer, {"tests": tests, "family": fam.name}

    def score(self, problem: Problem, output: str) -> bool:
        source = extract_code(output) + "\n\n" + "\n".join(problem.meta["tests"]) + "\n"
        return run_code(source, self.timeout, unsandboxed=self.unsandboxed).ok

    def score_many(self, problems: list[Problem], outputs: list[str]) -> list[bool]:
        # one subprocess per problem; threads overlap their start-up cost
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(self.score, problems, outputs))
