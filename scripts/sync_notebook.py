#!/usr/bin/env python
"""Regenerate the submission notebook's parameters cell from `KaggleRunConfig`, then its .ipynb (jupytext).

    .venv/bin/python scripts/sync_notebook.py            # rewrite kaggle_notebooks/trm_submission.py and .ipynb
    .venv/bin/python scripts/sync_notebook.py --check    # exit 1 if either is stale (tests/test_notebooks.py)

A field added to the config (with its default and help, `trm_core.config.setting`) becomes a notebook parameter
here: same name, same default (NOTEBOOK_DEFAULTS where the notebook needs another), its help as the comment that
`papermill --help-notebook` shows. Only literals, one per line, and no `=` in a comment (papermill's parser
skips such a line, and the parameter would silently not be injected).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "kaggle_notebooks" / "trm_submission.py"
# The notebook's own parameters (the install cell), before the config's.
NOTEBOOK_ONLY = {
    "wheels_dir": ("/kaggle/input/trm-core-wheels", "offline wheelhouse: pip install --no-index --find-links"),
    "repo_dir": ("/kaggle/input/trm-core-repo", "trm_core source, put on sys.path if the wheels fail"),
}
# Defaults that differ in the notebook: a Kaggle log is a file, not a terminal (the heartbeat reports instead).
NOTEBOOK_DEFAULTS = {"progress": False}


def _annotation(tp) -> str:
    args = typing.get_args(tp)
    if type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return f'"Optional[{inner.__name__}]"'  # a string: papermill's parser reads it, nothing evaluates it
    return (typing.get_origin(tp) or tp).__name__


def _literal(value) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def parameters_cell() -> str:
    """The parameters cell: the notebook's own parameters, then one line per config field."""
    from trm_core.config import KaggleRunConfig

    lines = [f"{name}: str = {_literal(default)}  # {help_}" for name, (default, help_) in NOTEBOOK_ONLY.items()]
    hints = typing.get_type_hints(KaggleRunConfig)
    for f in dataclasses.fields(KaggleRunConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        default = NOTEBOOK_DEFAULTS.get(f.name, default)
        help_ = f.metadata["help"]
        if "=" in help_:
            raise ValueError(f"KaggleRunConfig.{f.name}: its help holds '=', which papermill cannot parse")
        lines.append(f"{f.name}: {_annotation(hints[f.name])} = {_literal(default)}  # {help_}")
    return "\n".join(lines)


def rendered() -> str:
    """The jupytext source with its parameters cell regenerated."""
    text = SOURCE.read_text()
    head, rest = text.split('# %% tags=["parameters"]\n', 1)
    _, tail = rest.split("\n\n# %%", 1)
    return f'{head}# %% tags=["parameters"]\n{parameters_cell()}\n\n# %%{tail}'


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if the notebook is stale")
    args = p.parse_args(argv)
    import jupytext

    text = rendered()
    ipynb = SOURCE.with_suffix(".ipynb")
    notebook = jupytext.reads(text, fmt="py:percent")

    def cells(nb) -> list:
        return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]

    stale = ([SOURCE.name] if SOURCE.read_text() != text else []) + \
        ([ipynb.name] if not ipynb.is_file() or cells(jupytext.read(ipynb)) != cells(notebook) else [])
    if args.check:
        if stale:
            print(f"stale: {', '.join(stale)} (run scripts/sync_notebook.py)", file=sys.stderr)
        return 1 if stale else 0
    SOURCE.write_text(text)
    jupytext.write(notebook, ipynb)
    print(f"wrote {SOURCE.relative_to(REPO)} and {ipynb.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
