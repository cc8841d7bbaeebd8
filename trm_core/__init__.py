"""trm_core: Tiny Recursive Models for ARC-AGI-2 on CPU and GPU, offline, Kaggle-first.

Public API (see README.md):
    trm_core.load_checkpoint(path, **arch) -> TRM ready for inference
    trm_core.predict(model, inputs, puzzle_identifiers, steps=None) -> dict
    trm_core.ArchConfig, trm_core.build_model
"""

from trm_core.config import ArchConfig
from trm_core.model import TRM, build_model, predict

__version__ = "0.1.0"


def load_checkpoint(path, **arch):
    """Load an upstream, fork or trm_core checkpoint as a TRM in eval mode (see `trm_core.checkpoint`)."""
    from trm_core.checkpoint import load_checkpoint as _load

    return _load(path, **arch)


__all__ = ["ArchConfig", "TRM", "build_model", "load_checkpoint", "predict", "__version__"]
