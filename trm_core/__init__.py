"""trm_core: Tiny Recursive Models for ARC-AGI-2 on CPU and GPU, offline, Kaggle-first.

Public API (see README.md):
    trm_core.load_checkpoint(path, **arch) -> TRM ready for inference (upstream, fork or trm_core files)
    trm_core.predict(model, inputs, puzzle_identifiers, steps=None) -> dict(logits, preds, q_halt_logits, ...)
    trm_core.ArchConfig, trm_core.build_model
    trm_core.run_eval(checkpoint, data_dir, output_dir, ...) -> metrics (submission.json, per_task.csv, ...)
    trm_core.vote / pass_at_k / make_submission / validate_submission / score_submission
"""

from trm_core.checkpoint import load_checkpoint
from trm_core.config import ArchConfig
from trm_core.evaluate import run_eval
from trm_core.model import TRM, build_model, predict
from trm_core.submission import make_submission, score_submission, validate_submission
from trm_core.voting import pass_at_k, vote

__version__ = "0.1.0"


__all__ = ["ArchConfig", "TRM", "build_model", "load_checkpoint", "make_submission", "pass_at_k", "predict",
           "run_eval", "score_submission", "validate_submission", "vote", "__version__"]
