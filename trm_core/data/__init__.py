"""ARC data: task files (`arc`), augmentations and tokens (`augment`), the builder (`build`), the loader (`dataset`).

Import from the submodules (`from trm_core.data.arc import load_tasks`); only `dataset` needs torch.
"""
