#!/usr/bin/env python
"""Regenerate the README's measured facts from the commands that measure them.

    .venv/bin/python scripts/readme_facts.py            # count the tests (pytest --collect-only), time `trm --help`
    .venv/bin/python scripts/readme_facts.py --suite    # also run the whole suite and record its time (~5 min)
    .venv/bin/python scripts/readme_facts.py --check    # exit 1 when the README's test count is stale

The facts sit between `<!-- facts: ... -->` and `<!-- /facts -->` in README.md; without `--suite` the recorded
suite time (and the date it was measured) is kept. OMP_NUM_THREADS=1 is set, as tests/conftest.py does.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BLOCK = re.compile(r"(<!-- facts:[^\n]*-->\n)(.*?)(\n<!-- /facts -->)", re.S)


def count_tests() -> int:
    """Tests `pytest --collect-only` finds (GPU-only ones included: they skip at run time)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "tests"], cwd=REPO, text=True,
                         capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600).stdout
    found = re.search(r"(\d+) tests? collected", out)
    if not found:
        raise RuntimeError(f"pytest --collect-only said: {out[-500:]}")
    return int(found.group(1))


def time_suite() -> tuple[float, str]:
    """(minutes, pytest's summary line) of one full run of the suite."""
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests"], cwd=REPO, text=True, capture_output=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "no output"
    if res.returncode != 0:
        raise RuntimeError(f"the suite failed: {summary}")
    return (time.monotonic() - t0) / 60, summary


def time_help(runs: int = 5) -> float:
    """The fastest of `runs` starts of `trm --help` (python -m trm_core --help), in seconds."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "trm_core", "--help"], cwd=REPO, capture_output=True, check=True)
        best = min(best, time.monotonic() - t0)
    return best


def render(tests: int, help_s: float, suite: str) -> str:
    return (f"The suite has {tests} tests (`pytest --collect-only`){suite}; GPU-only tests are skipped without a "
            f"GPU. `trm --help` starts in {help_s:.2f} s (it imports no torch).")


def recorded_suite(facts: str) -> str:
    """The recorded suite time of a facts block, kept when the suite is not rerun: everything up to the fixed
    text after it (pytest's summary holds parentheses of its own, e.g. "(0:04:51)", then the date)."""
    old = re.search(r"(; the whole run took .*?)(?=; GPU-only tests)", facts, re.S)
    return old.group(1) if old else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", action="store_true", help="run the whole suite and record its time")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the test count is stale")
    args = p.parse_args(argv)
    text = README.read_text()
    block = BLOCK.search(text)
    if block is None:
        raise SystemExit("README.md has no <!-- facts: --> block")
    tests = count_tests()
    if args.check:
        stale = f"The suite has {tests} tests " not in block.group(2)
        if stale:
            print(f"README.md: the test count is stale ({tests} collected): run scripts/readme_facts.py",
                  file=sys.stderr)
        return int(stale)
    suite = recorded_suite(block.group(2))
    if args.suite:
        minutes, summary = time_suite()
        suite = (f"; the whole run took {minutes:.1f} minutes on {os.cpu_count()} CPU cores "
                 f"({summary.strip('= ')}, {time.strftime('%Y-%m-%d')})")
    facts = render(tests, time_help(), suite)
    README.write_text(text[:block.start(2)] + facts + text[block.end(2):])
    print(facts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
