"""Every command and Python example of README.md runs as written.

Convention (also in docs/README.md): ```bash and ```python blocks in README.md are executed by this
test; use ```text for output or for commands that must not run.

The blocks run in README order in one temporary directory shared by all of them (a block may use the
``runs/NAME`` an earlier block wrote), with the venv's ``bin`` (where the ``symclone`` console script
sits next to ``sys.executable``) first on ``PATH``, ``OMP_NUM_THREADS=1`` and a per-block time limit.
Bash blocks run under ``bash -euo pipefail``; lines starting with ``make`` are skipped, because the
set-up commands are exercised by CI itself (``.ci/run`` runs ``make test``). Python blocks run as
their own ``sys.executable`` process. Each block is one test case (``readme-block-07-bash``); asking
for one case runs the blocks before it first, so any selection sees the directory it expects.

If a block uses ``~/``, ``HOME`` points into the temporary directory.

Blocks are keyed by their first line (by convention a comment saying what the block does):
``KNOWN_FAILING`` lists blocks that fail until a known bug is fixed (strict xfail: once the fix lands
the case fails and the entry must go), ``NEEDS_FASHION_MNIST`` blocks that are skipped when the
Debian package ``dataset-fashion-mnist`` is not installed.
"""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from conftest import fashion_mnist_available

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
#: seconds per block (one CPU core; the slowest block takes ~30 s on an idle core)
BLOCK_TIMEOUT = float(os.environ.get("SYMCLONE_README_TIMEOUT", 240))

#: blocks that fail until an in-flight fix lands; strict xfail, so the test fails once they pass
KNOWN_FAILING: dict[str, str] = {
    # "# first line of the block": "why it fails until the fix lands",
}
#: blocks that read Fashion-MNIST (Debian package dataset-fashion-mnist); skipped without it
NEEDS_FASHION_MNIST = {
    "# Train the G-CNN teacher on 256 Fashion-MNIST images for one epoch (needs dataset-fashion-mnist)",
    "# Fine-tuning: a cloned p4 blocks layer behind an exactly invariant head, frozen, on Fashion-MNIST",
    "# Fine-tune a cloned p4 layer on c4-breaking with an L2 anchor (256 Fashion-MNIST images, one epoch)",
}

_FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass
class Block:
    index: int
    lang: str          # "bash" or "python"
    line: int          # 1-based line of the opening fence in README.md
    code: str

    @property
    def first_line(self) -> str:
        return next((l.strip() for l in self.code.splitlines() if l.strip()), "")

    @property
    def id(self) -> str:
        return f"readme-block-{self.index:02d}-{self.lang}"


def parse_blocks(text: str) -> list[Block]:
    """The ```bash and ```python blocks of a Markdown text, in order (other fences are skipped)."""
    blocks, lang, start, body = [], None, 0, []
    for no, line in enumerate(text.splitlines(), 1):
        m = _FENCE.match(line)
        if lang is None:
            if m:
                lang, start, body = m.group(1), no, []
        elif line.strip() == "```":
            if lang in ("bash", "python"):
                blocks.append(Block(len(blocks) + 1, lang, start, "\n".join(body) + "\n"))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"README.md: code fence opened at line {start} is never closed"
    return blocks


def runnable_bash(code: str) -> str:
    """The block without its ``make ...`` lines (the set-up commands CI runs itself)."""
    return "\n".join(l for l in code.splitlines() if not re.match(r"\s*make(\s|$)", l)) + "\n"


BLOCKS = parse_blocks(README.read_text(encoding="utf-8"))


@dataclass
class Result:
    rc: Optional[int]   # None: timed out
    stdout: str
    stderr: str
    seconds: float        # wall-clock
    cpu_seconds: float    # user + system time of the block's processes


class Runner:
    """Runs the README's blocks once each, in order, in one shared directory."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.results: dict[int, Optional[Result]] = {}
        self.env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
                        PYTHONUNBUFFERED="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        self.env.pop("PYTHONPATH", None)
        if any(re.search(r"(^|[\s=:'\"])~/", b.code, re.M) for b in BLOCKS):   # never write into the real home
            home = workdir / "home"
            home.mkdir(exist_ok=True)
            self.env["HOME"] = str(home)

    def skip_reason(self, block: Block) -> Optional[str]:
        if block.lang == "bash" and not runnable_bash(block.code).strip():
            return "only `make` set-up commands (CI runs `make test` itself, see .ci/run)"
        if block.first_line in NEEDS_FASHION_MNIST and not fashion_mnist_available():
            return "needs Fashion-MNIST (apt-get install dataset-fashion-mnist)"
        return None

    def run_upto(self, index: int) -> Optional[Result]:
        for b in BLOCKS[:index]:
            if b.index not in self.results:
                self.results[b.index] = None if self.skip_reason(b) else self._run(b)
        return self.results[index]

    def _run(self, block: Block) -> Result:
        scripts = self.workdir / ".readme-blocks"
        scripts.mkdir(exist_ok=True)
        if block.lang == "bash":
            path = scripts / f"{block.id}.sh"
            path.write_text(runnable_bash(block.code))
            cmd = ["bash", "-euo", "pipefail", str(path)]
        else:
            path = scripts / f"{block.id}.py"
            path.write_text(block.code)
            cmd = [sys.executable, str(path)]
        t0, ru0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(cmd, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=BLOCK_TIMEOUT)
            rc: Optional[int] = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)          # the block's children (symclone) too
            out, err = proc.communicate()
            rc = None
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return Result(rc, out, err, time.perf_counter() - t0, cpu)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    if not (BIN / "symclone").exists():
        pytest.fail(f"no `symclone` console script next to {sys.executable}; install the package into this "
                    "environment (`make test` does: pip install -e .)")
    return Runner(tmp_path_factory.mktemp("readme"))


def _tail(text: str, n: int = 3000) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def _param(block: Block):
    marks = []
    if block.first_line in KNOWN_FAILING:
        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_FAILING[block.first_line]))
    return pytest.param(block, id=block.id, marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_readme_block(block: Block, runner: Runner):
    reason = runner.skip_reason(block)
    if reason:
        pytest.skip(reason)
    res = runner.run_upto(block.index)
    where = f"README.md line {block.line}, {block.id}: {block.first_line!r}"
    if res.rc is None:
        pytest.fail(f"{where} did not finish within {BLOCK_TIMEOUT:.0f} s\n"
                    f"--- stdout (tail) ---\n{_tail(res.stdout)}\n--- stderr (tail) ---\n{_tail(res.stderr)}")
    assert res.rc == 0, (f"{where} exited with {res.rc} after {res.seconds:.1f} s ({res.cpu_seconds:.1f} CPU-s)\n"
                         f"--- stdout (tail) ---\n{_tail(res.stdout, 1500)}\n"
                         f"--- stderr (tail) ---\n{_tail(res.stderr)}")


def test_readme_blocks_are_keyed_uniquely():
    firsts = [b.first_line for b in BLOCKS]
    assert len(BLOCKS) >= 10, "README.md: expected its bash/python blocks, found few (fence syntax?)"
    for key in set(KNOWN_FAILING) | NEEDS_FASHION_MNIST:
        assert firsts.count(key) == 1, (f"tests/test_readme.py: {key!r} should be the first line of exactly one "
                                        f"README block, found {firsts.count(key)}; update the list")
    for b in BLOCKS:
        if b.lang == "python" or runnable_bash(b.code).strip():
            assert b.first_line.startswith("#"), (f"README.md line {b.line}: start the block with a comment line "
                                                  f"saying what it does (got {b.first_line!r})")


def test_readme_is_an_entry_point():
    text = README.read_text(encoding="utf-8")
    n = len(text.splitlines())
    assert n <= 320, f"README.md has {n} lines; move reference material and measured tables to docs/"
    for outside in ("DESIGN.md", "DESIGN §", "../shared", "shared/data"):
        assert outside not in text, f"README.md cites {outside!r}, which is not part of the repository"


@pytest.mark.parametrize("doc", [README] + sorted((ROOT / "docs").glob("*.md")), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    text = doc.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)      # links inside code are not links
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.exists(), f"{doc.relative_to(ROOT)}: link {target!r} points to a missing file"
