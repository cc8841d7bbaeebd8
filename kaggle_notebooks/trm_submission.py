# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # TRM ARC-AGI-2 submission
#
# Offline, under a deadline: install `trm_core` from the attached wheels, write a fallback `submission.json` at
# once, build the test-time dataset from the test tasks' demonstration pairs, adapt the pretrained TRM (`mode`),
# vote over augmentations in rounds and replace `submission.json` atomically after each. All logic lives in
# `trm_core.kaggle`; this notebook passes its parameters, which are the fields of `trm_core.config.KaggleRunConfig`
# (regenerate this cell with `scripts/sync_notebook.py` after adding one). A "Save & Run All" commit (no
# `KAGGLE_IS_COMPETITION_RERUN`) runs every phase in `commit_budget_minutes`; the competition rerun gets
# `budget_minutes`. Work files stay in /tmp, outside the kernel's output.

# %% tags=["parameters"]
wheels_dir: str = "/kaggle/input/trm-core-wheels"  # offline wheelhouse: pip install --no-index --find-links
repo_dir: str = "/kaggle/input/trm-core-repo"  # trm_core source, put on sys.path if the wheels fail
data_dir: str = "/kaggle/input/arc-prize-2025"  # competition folder; its arc-agi_test_challenges.json is found below it (the slug changes every year)
challenges_file: "Optional[str]" = None  # a challenges file or a task list (data/proof_tasks.json) to use instead of searching data_dir
solutions_file: "Optional[str]" = None  # known solutions: the run scores itself and trm report shows them
weights: str = "/kaggle/input/trm-core-weights"  # trunk export folder, checkpoint or run folder; scratch: a tiny TRM from scratch
output_dir: str = "/kaggle/working"  # submission.json, kaggle_log.jsonl and eval/ (trm report reads it)
work_dir: "Optional[str]" = None  # each run builds and trains in a new folder under this; None: TMPDIR/trm_work, outside the kernel's output
budget_minutes: float = 690.0  # wall clock from the start to the final submission.json
commit_budget_minutes: float = 10.0  # budget of a Kaggle commit run (Save and Run All, where KAGGLE_IS_COMPETITION_RERUN is unset): every phase, briefly
mode: str = "emb_then_full"  # lora | full | emb_then_full | emb_only | none (no training)
steps: "Optional[int]" = None  # cap on optimizer steps; None: as many as the budget allows
batch_size: int = 384  # global batch over all processes; lowered to what one epoch holds
train: list = []  # dotted overrides of the mode's training config, as trm train takes them (lr, ema, lora.rank, arch.hidden_size, ...)
train_aug: int = 1000  # augmented versions per task to train on (fewer if the build runs short)
colour_permutation: bool = True  # False: the 8 dihedral transforms only (at most 8 versions)
dihedral_first: bool = False  # the plain dihedral versions first, then random colour permutations
train_translation: bool = True  # random placement of the training pairs on the canvas
vote_aug: int = 512  # augmented versions per test input that vote (fewer if time runs short)
select: str = "mean_logprob"  # how the two attempts are chosen: mean_logprob (measured best) | votes | poe | votes_then_logprob | hybrid (trm_core/rescore.py)
select_candidates: int = 64  # K: candidates per test input a likelihood rule re-ranks
select_views: "Optional[int]" = None  # M: augmented views each candidate is scored under, one inference row each; None or all: every view that voted
noise_scale: float = 0.0  # latent noise std of the extra noisy passes
noise_samples: int = 0  # noisy inference passes per row that also vote (0: off); each costs a full voting pass
pool_checkpoints: int = 1  # pool the votes of the adaptation run's last N checkpoints (1: the final one)
eval_batch_size: int = 256  # rows per inference forward per device
warmup_steps: int = 20  # training steps timed before planning (the first third is dropped)
hidden_rerun_factor: float = 1.34  # planned inference time x this: the hidden rerun is about a third slower than the placeholder file
safety_margin: float = 0.05  # fraction of the budget the plan leaves free at the end
seed: int = 0  # augmentation and training seed
device: str = "auto"  # auto | cpu | cuda
nproc: "Optional[int]" = None  # training processes and inference devices; None: visible GPUs (1 on CPU)
canvas_size: "Optional[int]" = None  # canvas side for scratch weights (a trunk carries its own); None: 30
progress: bool = False  # progress bars of the build and the trainer
heartbeat_minutes: float = 3.0  # a status line this often while a phase works (0: none)

# %% [markdown]
# Install `trm_core` offline, unless it already imports (a local run, or the repo on the path). pip's own error
# is shown if the install fails; the repo dataset on `sys.path` is the fallback.

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("trm_core") is None:
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels_dir, "trm_core"]
    print(" ".join(pip))
    done = subprocess.run(pip, capture_output=True, text=True)
    print(done.stdout[-2000:])
    if done.returncode != 0:
        print(f"pip failed (exit {done.returncode}); trying {repo_dir} on sys.path. pip said:\n"
              f"{done.stderr[-4000:]}", file=sys.stderr)
else:
    print(f"trm_core already importable: not installing from {wheels_dir}")
if importlib.util.find_spec("trm_core") is None:
    sys.path.insert(0, repo_dir)
import trm_core  # noqa: E402

print("trm_core", trm_core.__version__, "from", trm_core.__file__)

# %% [markdown]
# The whole recipe, under the deadline. A valid `submission.json` exists after the first seconds; every phase is
# logged in `kaggle_log.jsonl`, with a heartbeat line every `heartbeat_minutes`.

# %%
import dataclasses  # noqa: E402
import os  # noqa: E402

from trm_core.config import config_from  # noqa: E402
from trm_core.kaggle import kaggle_budget_minutes, run_kaggle  # noqa: E402

cfg = config_from(globals())
minutes, why = kaggle_budget_minutes(cfg, os.environ)
print(f"budget: {minutes:g} minutes ({why})")
result = run_kaggle(dataclasses.replace(cfg, budget_minutes=minutes))

# %% [markdown]
# The plan, the time spent per phase, and a last validation of the file Kaggle will read.

# %%
from trm_core.submission import check_submission  # noqa: E402

print(result.format())
problems = check_submission(result.submission, result.challenges)
print("submission.json:", "valid" if not problems else "INVALID")
print("\n".join(problems[:20]))
