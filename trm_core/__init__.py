"""trm_core: Tiny Recursive Models for ARC-AGI-2 on CPU and GPU, offline, Kaggle-first.

Public API (see README.md):
    trm_core.load_checkpoint(path, **arch) -> TRM ready for inference (upstream, fork or trm_core files)
    trm_core.predict(model, inputs, puzzle_identifiers, steps=None) -> dict(logits, preds, q_halt_logits, ...)
    trm_core.ArchConfig, trm_core.build_model
    trm_core.run_eval(checkpoint, data_dir, output_dir, ...) -> metrics (submission.json, per_task.csv, ...)
    trm_core.vote / pass_at_k / make_submission / validate_submission / score_submission
    trm_core.KaggleRunConfig, trm_core.run_kaggle(cfg) -> RunResult (the Kaggle recipe)

The names are imported on first use (PEP 562), so `import trm_core` and `trm --help` do not load torch.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {"ArchConfig": "trm_core.config", "KaggleRunConfig": "trm_core.config",
            "TRM": "trm_core.model", "build_model": "trm_core.model", "predict": "trm_core.model",
            "load_checkpoint": "trm_core.checkpoint", "run_eval": "trm_core.evaluate",
            "run_kaggle": "trm_core.kaggle", "make_submission": "trm_core.submission",
            "score_submission": "trm_core.submission", "validate_submission": "trm_core.submission",
            "pass_at_k": "trm_core.voting", "vote": "trm_core.voting"}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'trm_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
