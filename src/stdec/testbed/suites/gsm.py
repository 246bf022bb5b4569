"""`gsm`: multi-step integer word problems; worked solution in varied sentences, then `#### N`."""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from stdec.tasks.base import Problem, Task

NAMES = (
    "Tom", "Ava", "Liam", "Mia", "Noah", "Emma", "Omar", "Sara", "Ben", "Lily", "Kai", "Zoe",
    "Ivan", "Nina", "Leo", "Ruby", "Sam", "Maya", "Eli", "Chloe", "Raj", "Priya", "Jack", "Lucy",
    "Ali", "Hana", "Marco", "Elena", "Yusuf", "Amara", "Diego", "Sofia", "Kenji", "Yuki", "Finn",
    "Isla", "Theo", "Alice", "Hugo", "Clara", "Felix", "Nora", "Oscar", "Grace", "Max", "Ella",
    "Jonas", "Lena", "Tariq", "Layla", "Pedro", "Ana", "Chen", "Mei", "Dev", "Anika", "Luca",
    "Rosa", "Sean", "Fiona", "Kofi", "Ama", "Pablo", "Carmen", "Erik", "Ingrid", "Tomas", "Vera",
    "Adam", "Julia", "Ravi", "Asha", "Paul", "Rita", "Milo", "Ines", "Jamal", "Nadia", "Owen",
)
FRUITS = (
    "apples", "oranges", "pears", "peaches", "plums", "lemons", "mangoes", "bananas", "apricots",
    "limes", "figs", "kiwis", "cherries", "grapefruits",
)
BAKED = (
    "cookies", "muffins", "cupcakes", "brownies", "rolls", "bagels", "scones", "tarts", "donuts",
    "pretzels", "waffles", "biscuits", "pies",
)
TOYS = (
    "marbles", "stickers", "trading cards", "toy cars", "seashells", "beads", "buttons",
    "pebbles", "badges", "yo-yos", "kites", "puzzles",
)
SCHOOL = (
    "pencils", "erasers", "notebooks", "crayons", "markers", "rulers", "folders", "pens",
    "glue sticks", "binders", "sharpeners",
)
ANIMALS = (
    "cows", "sheep", "goats", "pigs", "horses", "chickens", "ducks", "geese", "rabbits", "turkeys",
    "llamas",
)
FLOWERS = (
    "roses", "tulips", "daisies", "lilies", "sunflowers", "orchids", "pansies", "violets",
    "irises", "marigolds",
)
VEG = (
    "carrots", "potatoes", "tomatoes", "onions", "peppers", "cucumbers", "pumpkins", "melons",
    "cabbages", "beets",
)
SHOP = (
    "notebooks", "mugs", "candles", "socks", "towels", "plates", "cups", "hats", "scarves",
    "bowls", "spoons", "lamps",
)
GIFTS = (  # singular, consonant-initial: the text says "a {obj}"
    "bike", "game", "jacket", "lamp", "watch", "backpack", "radio", "helmet", "scooter", "guitar",
    "camera", "tent",
)

# One reasoning step, said several ways. {fact_expr} is the fact with "a + b = r" in its number
# slot, {fact} the fact with r; capitalised keys start a sentence.
STEP_PHRASINGS = (
    "{Fact_expr}.",
    "So {fact_expr}.",
    "That means {fact_expr}.",
    "{Verb} gives {expr} = {r}, so {fact}.",
    "{expr} = {r}, so {fact}.",
)
VERBS = {
    "+": ("Adding", "Adding them"),
    "-": ("Subtracting", "Taking away"),
    "*": ("Multiplying", "Multiplying them"),
    "/": ("Dividing", "Sharing out"),
}
OPS: dict[str, Callable[[int, int], int]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv,
}
# Every given and intermediate number is in [0, MAX_NUM). Two digits, so that the testbed can
# be trained on a CPU: a first 4000-step CPU run on numbers up to 999 learned none of the suite.
MAX_NUM = 100

Num = tuple[int, int] | Callable[[dict[str, int]], int]
Step = tuple[str, str | int, str | int, str, str]  # (op, x, y, result name, fact with {x})


@dataclass(frozen=True)
class Template:
    id: str
    text: str
    nums: dict[str, Num]  # drawn in order; a callable derives a value from earlier ones
    steps: tuple[Step, ...]  # the last step's result is the answer
    objs: dict[str, tuple[str, ...]] = field(default_factory=dict)


T = Template
TEMPLATES: tuple[Template, ...] = (
    T("shop_change",
      "{name} buys {a} {obj} at {b} dollars each and pays with {c} dollars. "
      "How much change does {name} get?",
      {"a": (2, 9), "b": (2, 15), "c": (20, 200)},
      (("*", "a", "b", "cost", "the {obj} cost {x} dollars"),
       ("-", "c", "cost", "ans", "{name} gets {x} dollars in change")), {"obj": SHOP}),
    T("bake_sell",
      "{name} bakes {a} trays of {obj} with {b} on each tray and sells {c} of them. "
      "How many {obj} are left?",
      {"a": (2, 9), "b": (3, 12), "c": (2, 60)},
      (("*", "a", "b", "made", "{name} bakes {x} {obj}"),
       ("-", "made", "c", "ans", "{x} {obj} are left")), {"obj": BAKED}),
    T("savings",
      "{name} saves {a} dollars every week for {b} weeks and then spends {c} dollars on a {obj}. "
      "How much money does {name} have left?",
      {"a": (3, 25), "b": (2, 12), "c": (5, 150)},
      (("*", "a", "b", "saved", "{name} saves {x} dollars"),
       ("-", "saved", "c", "ans", "{name} has {x} dollars left")), {"obj": GIFTS}),
    T("travel",
      "{name} drives at {a} km per hour for {b} hours and then walks {c} km. "
      "How many km does {name} travel in all?",
      {"a": (20, 90), "b": (2, 6), "c": (2, 15)},
      (("*", "a", "b", "drive", "{name} drives {x} km"),
       ("+", "drive", "c", "ans", "{name} travels {x} km in all"))),
    T("farm",
      "A farm has {a} {obj}. The farmer buys {b} more and then sells {c}. "
      "How many {obj} are on the farm now?",
      {"a": (10, 200), "b": (2, 60), "c": (2, 100)},
      (("+", "a", "b", "after", "the farm has {x} {obj} after buying"),
       ("-", "after", "c", "ans", "the farm has {x} {obj} now")), {"obj": ANIMALS}),
    T("classroom",
      "A school has {a} classes with {b} students in each class. {c} students are absent today. "
      "How many students are at school today?",
      {"a": (3, 20), "b": (15, 35), "c": (2, 40)},
      (("*", "a", "b", "all", "the school has {x} students"),
       ("-", "all", "c", "ans", "{x} students are at school today"))),
    T("share",
      "{name} has {t} {obj} and shares them equally among {k} friends. Each friend eats {c} of "
      "them. How many {obj} does each friend have left?",
      {"k": (2, 9), "q": (3, 20), "t": lambda v: v["k"] * v["q"], "c": (2, 10)},
      (("/", "t", "k", "each", "each friend gets {x} {obj}"),
       ("-", "each", "c", "ans", "each friend has {x} {obj} left")), {"obj": BAKED}),
    T("garden",
      "{name} plants {a} rows of {obj} with {b} in each row, then plants {c} more. "
      "How many {obj} did {name} plant?",
      {"a": (2, 12), "b": (3, 15), "c": (2, 30)},
      (("*", "a", "b", "rows", "the rows hold {x} {obj}"),
       ("+", "rows", "c", "ans", "{name} planted {x} {obj}")), {"obj": FLOWERS}),
    T("library",
      "A library has {a} books. It lends out {b} books on Monday and gets {c} books back on "
      "Tuesday. How many books are in the library now?",
      {"a": (50, 500), "c": (2, 40), "d": (0, 40), "b": lambda v: v["c"] + v["d"]},
      (("-", "a", "b", "left", "the library has {x} books after Monday"),
       ("+", "left", "c", "ans", "the library has {x} books now"))),
    T("earnings",
      "{name} has {a} dollars, earns {b} dollars on each of {c} days, and then spends {d} "
      "dollars. How much money does {name} have now?",
      {"a": (5, 100), "b": (3, 20), "c": (2, 7), "d": (5, 120)},
      (("*", "b", "c", "earned", "{name} earns {x} dollars"),
       ("+", "a", "earned", "total", "{name} has {x} dollars before spending"),
       ("-", "total", "d", "ans", "{name} has {x} dollars now"))),
    T("more_than",
      "{name} has {a} {obj}. {name2} has {b} more {obj} than {name}. "
      "How many {obj} do they have together?",
      {"a": (3, 90), "b": (2, 40)},
      (("+", "a", "b", "n2", "{name2} has {x} {obj}"),
       ("+", "a", "n2", "ans", "together they have {x} {obj}")), {"obj": TOYS}),
    T("times_as_many",
      "{name} collects {a} {obj}. {name2} collects {k} times as many. "
      "How many {obj} do they collect in total?",
      {"a": (2, 50), "k": (2, 6)},
      (("*", "a", "k", "n2", "{name2} collects {x} {obj}"),
       ("+", "a", "n2", "ans", "they collect {x} {obj} in total")), {"obj": TOYS}),
    T("pizza",
      "{name} orders {a} pizzas cut into {b} slices each. The family eats {c} slices. "
      "How many slices are left?",
      {"a": (2, 8), "b": (4, 12), "c": (2, 50)},
      (("*", "a", "b", "slices", "there are {x} slices"),
       ("-", "slices", "c", "ans", "{x} slices are left"))),
    T("bus",
      "A bus leaves with {a} passengers. At the first stop {b} people get off and {c} get on. "
      "At the second stop {d} people get off. How many passengers are on the bus now?",
      {"a": (10, 60), "b": (2, 20), "c": (2, 20), "d": (2, 30)},
      (("-", "a", "b", "s1", "{x} passengers stay on at the first stop"),
       ("+", "s1", "c", "s2", "the bus has {x} passengers after the first stop"),
       ("-", "s2", "d", "ans", "the bus has {x} passengers now"))),
    T("tickets",
      "Adult tickets cost {a} dollars and child tickets cost {b} dollars. {name} buys {c} adult "
      "tickets and {d} child tickets. How much does {name} pay?",
      {"a": (8, 30), "b": (3, 15), "c": (2, 6), "d": (2, 8)},
      (("*", "c", "a", "adult", "the adult tickets cost {x} dollars"),
       ("*", "d", "b", "child", "the child tickets cost {x} dollars"),
       ("+", "adult", "child", "ans", "{name} pays {x} dollars"))),
    T("packs",
      "{name} buys {a} packs of {obj} with {b} in each pack and gives {c} to {name2}. "
      "How many {obj} does {name} keep?",
      {"a": (2, 10), "b": (4, 20), "c": (2, 40)},
      (("*", "a", "b", "all", "{name} buys {x} {obj}"),
       ("-", "all", "c", "ans", "{name} keeps {x} {obj}")), {"obj": SCHOOL}),
    T("reading",
      "A book has {c} pages. {name} reads {a} pages a day for {b} days. "
      "How many pages are left to read?",
      {"a": (2, 15), "b": (2, 9), "c": (20, 99)},
      (("*", "a", "b", "read", "{name} reads {x} pages"),
       ("-", "c", "read", "ans", "{x} pages are left to read"))),
    T("basket",
      "{name} picks {a} {obj} and {b} {obj2}, then gives {c} pieces of fruit to {name2}. "
      "How many pieces of fruit does {name} have left?",
      {"a": (3, 50), "b": (3, 50), "c": (2, 40)},
      (("+", "a", "b", "picked", "{name} picks {x} pieces of fruit"),
       ("-", "picked", "c", "ans", "{name} has {x} pieces of fruit left")),
      {"obj": FRUITS, "obj2": FRUITS}),
    T("bike_rent",
      "{name} rents a bike for {b} hours at {a} dollars per hour and buys a drink for {c} "
      "dollars. How much does {name} spend?",
      {"a": (3, 15), "b": (2, 8), "c": (2, 6)},
      (("*", "a", "b", "rent", "the bike costs {x} dollars"),
       ("+", "rent", "c", "ans", "{name} spends {x} dollars"))),
    T("laps",
      "{name} runs {a} laps of {b} meters on Monday and {c} meters on Tuesday. "
      "How many meters does {name} run on both days?",
      {"a": (2, 9), "b": (5, 30), "c": (5, 60)},
      (("*", "a", "b", "mon", "{name} runs {x} meters on Monday"),
       ("+", "mon", "c", "ans", "{name} runs {x} meters on both days"))),
    T("boxes",
      "{t} {obj} are packed equally into {k} boxes. {name} takes {c} of the boxes. "
      "How many {obj} does {name} take?",
      {"c": (2, 6), "d": (0, 5), "k": lambda v: v["c"] + v["d"], "q": (3, 25),
       "t": lambda v: v["k"] * v["q"]},
      (("/", "t", "k", "per", "each box holds {x} {obj}"),
       ("*", "c", "per", "ans", "{name} takes {x} {obj}")), {"obj": TOYS}),
    T("bake_share",
      "{name} bakes {a} {obj}, eats {b}, and shares the rest equally among {k} friends. "
      "How many {obj} does each friend get?",
      {"k": (2, 8), "q": (2, 15), "b": (2, 6), "a": lambda v: v["k"] * v["q"] + v["b"]},
      (("-", "a", "b", "rest", "{x} {obj} are left to share"),
       ("/", "rest", "k", "ans", "each friend gets {x} {obj}")), {"obj": BAKED}),
    T("coins",
      "{name} has {a} coins. {name2} has twice as many coins as {name}, and {name3} has {c} "
      "fewer coins than {name2}. How many coins do the three have together?",
      {"a": (3, 80), "c": (2, 30)},
      (("*", "a", 2, "n2", "{name2} has {x} coins"),
       ("-", "n2", "c", "n3", "{name3} has {x} coins"),
       ("+", "a", "n2", "s", "{name} and {name2} have {x} coins"),
       ("+", "s", "n3", "ans", "the three have {x} coins together"))),
    T("flour",
      "A cake needs {a} cups of flour. {name} has {c} cups of flour and bakes {b} cakes. "
      "How many cups of flour are left?",
      {"a": (2, 6), "b": (2, 9), "c": (10, 80)},
      (("*", "a", "b", "used", "the cakes use {x} cups of flour"),
       ("-", "c", "used", "ans", "{x} cups of flour are left"))),
    T("wages",
      "{name} works {a} hours a day for {b} days and earns {c} dollars per hour. "
      "How much does {name} earn?",
      {"a": (2, 8), "b": (2, 6), "c": (2, 9)},
      (("*", "a", "b", "hours", "{name} works {x} hours"),
       ("*", "hours", "c", "ans", "{name} earns {x} dollars"))),
    T("ages",
      "{name} is {a} years old. {name2} is {b} years older than {name}. "
      "How old will {name2} be in {c} years?",
      {"a": (4, 60), "b": (2, 30), "c": (2, 20)},
      (("+", "a", "b", "n2", "{name2} is {x} years old now"),
       ("+", "n2", "c", "ans", "{name2} will be {x} years old"))),
    T("aquarium",
      "An aquarium has {a} tanks with {b} fish in each. Then {c} new fish arrive and {d} fish "
      "are moved out. How many fish are in the aquarium now?",
      {"a": (2, 12), "b": (3, 30), "c": (2, 40), "d": (2, 40)},
      (("*", "a", "b", "fish", "the tanks hold {x} fish"),
       ("+", "fish", "c", "more", "there are {x} fish after the new ones arrive"),
       ("-", "more", "d", "ans", "the aquarium has {x} fish now"))),
    T("balloons",
      "{name} buys {a} bags of {b} balloons. {c} balloons pop, and {name} ties the rest into "
      "bunches of {k}. How many bunches does {name} make?",
      {"a": (2, 8), "b": (5, 15), "k": (2, 6), "q": (2, 40),
       "c": lambda v: v["a"] * v["b"] - v["k"] * v["q"]},
      (("*", "a", "b", "all", "{name} has {x} balloons"),
       ("-", "all", "c", "left", "{x} balloons are left"),
       ("/", "left", "k", "ans", "{name} makes {x} bunches"))),
    T("train_seats",
      "A train has {a} cars with {b} seats in each car. {c} seats are taken. "
      "How many seats are free?",
      {"a": (3, 9), "b": (5, 20), "c": (2, 90)},
      (("*", "a", "b", "seats", "the train has {x} seats"),
       ("-", "seats", "c", "ans", "{x} seats are free"))),
    T("orchard",
      "An orchard has {a} trees and each tree gives {b} {obj}. {name} packs the {obj} into bags "
      "of {k}. How many bags does {name} fill?",
      {"a": (2, 20), "k": (2, 10), "q": (2, 10), "b": lambda v: v["k"] * v["q"]},
      (("*", "a", "b", "all", "the trees give {x} {obj}"),
       ("/", "all", "k", "ans", "{name} fills {x} bags")), {"obj": FRUITS}),
    T("stamps",
      "{name} gives {a} stamps to {name2} and {b} stamps to {name3} and has {c} stamps left. "
      "How many stamps did {name} have at first?",
      {"a": (2, 40), "b": (2, 40), "c": (2, 100)},
      (("+", "a", "b", "given", "{name} gives away {x} stamps"),
       ("+", "given", "c", "ans", "{name} had {x} stamps at first"))),
    T("supplies",
      "{name} buys {a} {obj} for {b} dollars each and {c} {obj2} for {d} dollars each. "
      "How much does {name} spend?",
      {"a": (2, 9), "b": (2, 12), "c": (2, 9), "d": (2, 12)},
      (("*", "a", "b", "p1", "the {obj} cost {x} dollars"),
       ("*", "c", "d", "p2", "the {obj2} cost {x} dollars"),
       ("+", "p1", "p2", "ans", "{name} spends {x} dollars")), {"obj": SCHOOL, "obj2": SCHOOL}),
    T("stairs",
      "{name} climbs {a} steps on each trip, makes {b} trips a day, and does this for {c} days. "
      "How many steps does {name} climb?",
      {"a": (3, 15), "b": (2, 5), "c": (2, 5)},
      (("*", "a", "b", "day", "{name} climbs {x} steps a day"),
       ("*", "day", "c", "ans", "{name} climbs {x} steps in all"))),
    T("water",
      "A tank holds {a} liters of water. {name} uses {b} liters a day for {c} days. "
      "How many liters are left in the tank?",
      {"a": (30, 99), "b": (2, 12), "c": (2, 6)},
      (("*", "b", "c", "used", "{name} uses {x} liters"),
       ("-", "a", "used", "ans", "{x} liters are left in the tank"))),
    T("market",
      "{name} sells {a} {obj} on Saturday and {b} on Sunday at {c} dollars each. "
      "How much money does {name} make?",
      {"a": (3, 30), "b": (3, 30), "c": (2, 9)},
      (("+", "a", "b", "sold", "{name} sells {x} {obj}"),
       ("*", "sold", "c", "ans", "{name} makes {x} dollars")), {"obj": VEG}),
    T("lost_found",
      "{name} has {a} {obj}. {name} loses {b}, finds {c}, and then buys {d} more. "
      "How many {obj} does {name} have now?",
      {"a": (5, 80), "b": (2, 30), "c": (2, 20), "d": (2, 30)},
      (("-", "a", "b", "lost", "{name} has {x} {obj} after losing some"),
       ("+", "lost", "c", "found", "{name} has {x} {obj} after finding some"),
       ("+", "found", "d", "ans", "{name} has {x} {obj} now")), {"obj": TOYS}),
)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _solve(t: Template, nums: dict[str, int]) -> dict[str, int] | None:
    """All values (given and intermediate), or None if the draw breaks the integer rules."""
    if not all(2 <= v < MAX_NUM for v in nums.values()):  # 2+: the text uses plural nouns
        return None
    vals = dict(nums)
    for op, x, y, out, _ in t.steps:
        a, b = (vals[x] if isinstance(x, str) else x), (vals[y] if isinstance(y, str) else y)
        if op == "/" and (b == 0 or a % b):
            return None
        vals[out] = OPS[op](a, b)
        if not 0 <= vals[out] < MAX_NUM:
            return None
    return vals


def parse_answer(text: str) -> int | None:
    """The integer after the last `####`, or None."""
    if "####" not in text:
        return None
    m = re.match(r"\s*(-?\d+)(?!\d|[.,]\d)", text.rsplit("####", 1)[1])  # not 62.5 or 62,000
    return int(m.group(1)) if m else None


class GsmTask(Task):
    name = "gsm"
    gen_length = 128

    def sample(self, rng: random.Random) -> tuple[str, str, str, dict]:
        t = rng.choice(TEMPLATES)
        for _ in range(10_000):
            nums: dict[str, int] = {}
            for k, spec in t.nums.items():
                nums[k] = rng.randint(*spec) if isinstance(spec, tuple) else spec(nums)
            vals = _solve(t, nums)
            if vals is not None:
                break
        else:
            raise RuntimeError(f"gsm template {t.id!r} rejects every draw")
        words = dict(zip(("name", "name2", "name3"), rng.sample(NAMES, 3), strict=True))
        for k, pool in t.objs.items():  # distinct objects when two slots share a pool
            words[k] = rng.choice([w for w in pool if w not in words.values()])
        fill = {**words, **vals}
        sentences = []
        for op, x, y, out, fact in t.steps:
            a, b = (vals[x] if isinstance(x, str) else x), (vals[y] if isinstance(y, str) else y)
            if op in "+*" and rng.random() < 0.5:
                a, b = b, a
            expr, r = f"{a} {op} {b}", vals[out]
            fact_expr = fact.format(**fill, x=f"{expr} = {r}")
            fact_r = fact.format(**fill, x=r)
            sentences.append(rng.choice(STEP_PHRASINGS).format(
                fact_expr=fact_expr, Fact_expr=_cap(fact_expr), fact=fact_r,
                Verb=rng.choice(VERBS[op]), expr=expr, r=r))
        ans = vals[t.steps[-1][3]]
        key = t.id + "|" + ",".join(f"{k}={v}" for k, v in nums.items())
        answer = " ".join(sentences) + f"\n#### {ans}"
        return key, t.text.format(**fill), answer, {"answer": ans, "template": t.id}

    def score(self, problem: Problem, output: str) -> bool:
        return parse_answer(output) == problem.meta["answer"]
