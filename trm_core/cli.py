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

import importlib
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
    "plan": ("trm_core.kaggle", "main_plan", "Kaggle time-budget planner"),
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
        print(usage())
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


if __name__ == "__main__":
    sys.exit(main())
