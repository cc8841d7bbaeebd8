"""The `trm` console script: one thin subcommand per stage, each handled by its module's `main(argv)`.

    trm info CHECKPOINT                 what a checkpoint holds (format, keys, shapes, arch settings)
    trm export SRC OUT_DIR              trunk-only export for Kaggle datasets (<= 30 MB for the ARC model)
    trm select-tasks ...                tasks by rule: a pretraining pool without held-out tasks, drawn lists
    trm build-data ...                  ARC task files -> augmented token arrays (upstream layout)
    trm train --config-name NAME k=v    pretraining / post-training / test-time fine-tuning (torchrun-ready)
    trm eval --checkpoint P --output-dir D --data D   inference + voting + pass@K + submission.json
    trm score SUBMISSION SOLUTIONS      Kaggle score (pass@2) and per-task results
    trm validate SUBMISSION CHALLENGES  exit 0 only for a valid submission.json
    trm report RUN_DIR                  HTML report of a run's attempts, drawn in ARC colours
    trm kaggle --data-dir D ...         the whole Kaggle pipeline under a deadline
    trm hub fetch|push ...              Hugging Face weights in and out
    trm proof --tasks FILE              train a small TRM from scratch on a task file and score pass@2
    trm plan ...                        Kaggle time-budget planner
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

# subcommand -> (module, function). Modules are imported only when their subcommand runs.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": ("trm_core.checkpoint", "main_info", "what a checkpoint holds"),
    "export": ("trm_core.checkpoint", "main_export", "trunk-only export (weights + config + mean embedding)"),
    "select-tasks": ("trm_core.data.select", "main", "select ARC tasks by rule (held-out exclusions, size, draw)"),
    "build-data": ("trm_core.data.build", "main", "build an augmented dataset from ARC task files"),
    "train": ("trm_core.train", "main", "train (pretrain, post-train, test-time fine-tune)"),
    "eval": ("trm_core.evaluate", "main_eval", "inference, voting, pass@K, submission.json"),
    "score": ("trm_core.submission", "main_score", "score a submission.json against solutions"),
    "validate": ("trm_core.submission", "main_validate", "validate a submission.json against challenges"),
    "pool": ("trm_core.submission", "main_pool", "pool the votes of several evaluations into one submission.json"),
    "report": ("trm_core.report", "main", "HTML report of a run"),
    "kaggle": ("trm_core.kaggle", "main", "the Kaggle pipeline under a deadline"),
    "plan": ("trm_core.budget", "main_plan", "Kaggle time-budget planner"),
    "hub": ("trm_core.hub", "main", "fetch / push weights on the Hugging Face hub"),
    "proof": ("trm_core.proof", "main", "the CPU learning proof: train from scratch on a task file, score pass@2"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: trm <command> [args...]   (trm <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        try:
            print(usage())
        except BrokenPipeError:  # `trm --help | head`
            sys.stderr.close()
        return 0
    if argv[0] in ("-V", "--version"):
        from trm_core import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"trm: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    fn = getattr(importlib.import_module(module), func)
    try:
        return int(fn(rest) or 0)
    except BrokenPipeError:  # `trm info ... | head`: the reader left; not an error worth a traceback
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"trm {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place where errors become one line and an exit code
        if os.environ.get("TRM_TRACEBACK"):
            raise
        code, line = error_line(e)
        print(f"trm {name}: {line}", file=sys.stderr)
        return code


def error_line(e: BaseException) -> tuple[int, str]:
    """(exit code, one line) for an error that ends a subcommand.

    Exit 2, the message as it is: a bad input file (`trm_core.jsonio.InputError`, which `TaskError` is), a bad
    config or checkpoint (`ConfigError`, `CheckpointError`), a bad value (ValueError), and an input or output
    path that cannot be used (OSError: the path and the reason). Exit 1: anything else, named by its type
    (a bug to report; TRM_TRACEBACK=1 shows the traceback).
    """
    if isinstance(e, OSError):
        text = str(e)
        if e.filename is not None:
            from pathlib import Path

            from trm_core.utils import _why_not_writable

            reason = e.strerror or str(e)
            if e.errno in (errno.ENOTDIR, errno.EEXIST):  # a file where a folder is needed: say which one
                reason = _why_not_writable(Path(e.filename), e)
            text = f"{e.filename}: {reason}"
        if getattr(e, "filename2", None):
            text += f" (-> {e.filename2})"
        return 2, _one_line(text)
    if isinstance(e, ValueError):  # InputError, TaskError, ConfigError, CheckpointError included
        return 2, _one_line(str(e) or type(e).__name__)
    if isinstance(e, RecursionError):
        return 2, "input nested too deeply to process (RecursionError); TRM_TRACEBACK=1 shows where"
    return 1, _one_line(f"unexpected error: {type(e).__name__}: {e} (TRM_TRACEBACK=1 shows the traceback)")


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


if __name__ == "__main__":
    sys.exit(main())
