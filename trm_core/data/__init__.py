"""ARC data: task files (`arc`), augmentations and tokens (`augment`), the builder (`build`), the loader (`dataset`)."""

from trm_core.data.arc import Task, TaskError, find_task_files, load_challenges_json, load_tasks
from trm_core.data.augment import (COLOR_OFFSET, DIHEDRAL_INVERSE, EOS, PAD, aug_name, apply_aug, crop_tokens,
                                   crop_tokens_batch, dihedral_transform, grid_to_tokens, invert_aug,
                                   inverse_dihedral_transform, parse_aug_name)
from trm_core.data.dataset import DatasetMetadata, PuzzleDataset

__all__ = ["Task", "TaskError", "find_task_files", "load_challenges_json", "load_tasks", "COLOR_OFFSET",
           "DIHEDRAL_INVERSE", "EOS", "PAD", "aug_name", "apply_aug", "crop_tokens", "crop_tokens_batch",
           "dihedral_transform", "grid_to_tokens", "invert_aug", "inverse_dihedral_transform", "parse_aug_name",
           "DatasetMetadata", "PuzzleDataset"]
