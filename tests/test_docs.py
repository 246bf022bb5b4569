"""Every example in README.md and docs/*.md runs and prints what its page shows.

How a page's fenced blocks are read:
- ```python: run in the page's namespace (one per page, its blocks in order), in a scratch
  folder that is the page's working directory.
- ```bash: every command line runs (a trailing backslash continues a line, `#` starts a
  comment). `stdec ...` runs in this process through stdec.cli.main and must exit 0.
  `pip install ...` (alone or before `&&`) is the reader's install, already done, and
  `pytest` is this suite: neither runs. `stdec serve ...` (one a page) runs in a subprocess
  on a free loopback port, started when this file's first page runs, so that it boots while
  other pages run; its block waits until it answers, and the page's python blocks reach it
  where they say http://127.0.0.1:8000. Any other command fails the test: its block must
  be marked not run.
- ```text, right after a python or bash block (blank lines only between): what that block
  prints, stdout and stderr together, compared line by line (trailing spaces aside) after
  one normalisation: a number followed by " s" or " tokens/s" (a time, a speed) reads as N.
- `<!-- not run: REASON -->` on the line before a block skips that block: it needs what a
  test machine lacks (an 8B checkpoint, a GPU, hours). Few are allowed (MAX_NOT_RUN).

Settings, for speed on two shared cores: torch uses one thread (greedy ids do not depend on
it), the server subprocess too; HF_HUB_OFFLINE=1, so nothing is downloaded; stdec.load is
memoised, so each bundled model loads once for the whole file.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

import stdec
import stdec.cli
from stdec.api import load

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_NOT_RUN = 8  # blocks skipped in all pages together
SERVER_URL = "http://127.0.0.1:8000"  # what pages write; the test's server is elsewhere
NOT_RUN = re.compile(r"<!--\s*not run:\s*(\S.*?)\s*-->")
TIMING = re.compile(r"\b\d+(?:\.\d+)?(?= (?:s|tokens/s)\b)")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    not_run: str | None  # the reason, when marked
    output: str | None = None  # the ```text block that follows it


def blocks(page: Path) -> list[Block]:
    """The page's examples, each with the output it shows (if any)."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i, last_end = 0, None
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{page.name}:{start + 1}: a code block is never closed"
        code = "\n".join(lines[start + 1 : end])
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        mark = NOT_RUN.search(before)
        lang = fence.group(1)
        if lang == "text":
            follows = (found and last_end is not None
                       and all(not s.strip() for s in lines[last_end + 1 : start]))
            assert follows and found[-1].output is None, (
                f"{page.name}:{start + 1}: a ```text block shows output, so it must follow "
                "the python or bash block that prints it")
            found[-1].output = code
        else:
            found.append(Block(lang, code, start + 1, mark.group(1) if mark else None))
        last_end = i = end
        i += 1
    return [b for b in found if b.lang in ("python", "bash")]


def commands(code: str) -> list[list[str]]:
    """The command lines of a bash block, as words: continuations joined, comments dropped."""
    out, pending = [], ""
    for raw in code.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def normal(text: str) -> list[str]:
    return [TIMING.sub("N", line).rstrip() for line in text.strip("\n").splitlines()]


class Page:
    """One page's run: its namespace, its folder, its servers."""

    def __init__(self, page: Path, server: Server | None):
        self.page, self.server = page, server
        self.namespace: dict = {"__name__": f"docs:{page.name}"}
        self.url = server.url if server is not None else None

    def run(self, block: Block) -> str:
        where = f"{self.page.name}:{block.line}"
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            if block.lang == "python":
                code = block.code if self.url is None else block.code.replace(SERVER_URL,
                                                                              self.url)
                # dont_inherit: a page runs without this file's __future__ imports
                exec(compile(code, where, "exec", dont_inherit=True), self.namespace)
            else:
                for command in commands(block.code):
                    self.shell(command, where)
        return out.getvalue()

    def shell(self, words: list[str], where: str):
        command = shlex.join(words)
        if "&&" in words:  # `pip install ... && CMD`: the install is the reader's
            cut = words.index("&&")
            assert words[:2] == ["pip", "install"], f"{where}: unknown prefix in {command!r}"
            words = words[cut + 1 :]
        if words == ["pytest"] or words[:2] == ["pip", "install"]:  # this suite; an install
            return
        assert words[0] == "stdec", (f"{where}: {command!r} is not a stdec command; mark its "
                                     "block <!-- not run: REASON -->")
        if words[1] == "serve":  # already started (the servers fixture)
            self.server.wait(where)
            return
        code = stdec.cli.main(words[1:])
        assert code == 0, f"{where}: {command!r} exited with {code}"


class Server:
    """A page's `stdec serve ...`, in a subprocess on a free loopback port."""

    def __init__(self, argv: list[str], folder: Path, port: int):
        src = str(Path(stdec.__file__).resolve().parent.parent)
        path = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self.url = f"http://127.0.0.1:{port}"
        self.log = folder / "serve.log"  # a file, not a pipe: nobody reads it while it runs
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stdec", *argv, "--port", str(port)], cwd=folder,
                env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self, where: str):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{where}: stdec serve exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{where}: stdec serve was not ready (/ready) in 180 s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def serve_command(page: Path) -> list[str] | None:
    """The page's `stdec serve` arguments (one server a page at most), if it has one."""
    found = [words[1:] for b in blocks(page) if b.lang == "bash" and b.not_run is None
             for words in commands(b.code) if words[:2] == ["stdec", "serve"]]
    assert len(found) <= 1, f"{page.name}: one stdec serve a page"
    return found[0] if found else None


_LOADED: dict = {}


def _memo_load(load):
    def memo(model, **kw):
        from stdec.api import resolve_model_path

        key = (str(resolve_model_path(model)), tuple(sorted(kw.items(), key=str)))
        if key not in _LOADED:
            _LOADED[key] = load(model, **kw)
        return _LOADED[key]
    return memo


@pytest.fixture
def settings(monkeypatch):
    torch.set_num_threads(1)  # conftest puts the count back
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(stdec, "load", _memo_load(load))


@pytest.fixture(scope="module")
def servers(request, tmp_path_factory):
    """Every selected page's server, started when the first page runs, so that each boots
    while other pages run; stopped when the file is done."""
    pages = {item.callspec.params["page"] for item in request.session.items
             if "page" in getattr(getattr(item, "callspec", None), "params", {})}
    started = {}
    commands = {page: argv for page in sorted(pages)
                if (argv := serve_command(page)) is not None}
    # every port picked while the others are still held, so that no two servers get one
    with contextlib.ExitStack() as held:
        ports = []
        for _ in commands:
            s = held.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    try:
        for (page, argv), port in zip(commands.items(), ports, strict=True):
            started[page] = Server(argv, tmp_path_factory.mktemp("serve"), port)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_examples_print_what_the_page_shows(page, servers, settings, tmp_path,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Page(page, servers.get(page))
    for block in blocks(page):
        if block.not_run is not None:
            continue
        printed = run.run(block)
        if block.output is not None:
            assert normal(printed) == normal(block.output), (
                f"{page.name}:{block.line} printed\n{printed}\ninstead of\n{block.output}")


def test_few_blocks_are_not_run_and_each_says_why():
    skipped = [(p.name, b.line, b.not_run) for p in PAGES for b in blocks(p) if b.not_run]
    assert len(skipped) <= MAX_NOT_RUN, skipped
    assert all(len(reason) > 5 for _, _, reason in skipped), skipped


def test_the_readme_opens_with_its_two_set_up_commands():
    first = blocks(ROOT / "README.md")[0]
    main, tests = commands(first.code)[:2]
    assert main[:6] == ["pip", "install", "torch==2.13.0", "-e", ".", "&&"]
    assert main[6:8] == ["stdec", "generate"]
    assert tests == ["pip", "install", "torch==2.13.0", "-e", ".[dev]", "&&", "pytest"]
