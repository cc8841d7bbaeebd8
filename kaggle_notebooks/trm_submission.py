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
# vote over augmentations and replace `submission.json` atomically. All logic lives in `trm_core.kaggle`; this
# notebook only passes parameters. Edit `trm_submission.py` (jupytext) and regenerate the `.ipynb` with
# `jupytext --to ipynb kaggle_notebooks/trm_submission.py`.

# %% tags=["parameters"]
data_dir: str = "/kaggle/input/arc-prize-2025"  # competition folder; the slug changes every year
challenges_file: str = ""  # a challenges file to use instead of searching data_dir; "" searches
solutions_file: str = ""  # known solutions, to print the score; "" on Kaggle
weights_dir: str = "/kaggle/input/trm-core-weights"  # `trm export` folder (model.pt + config.yaml), or "scratch"
wheels_dir: str = "/kaggle/input/trm-core-wheels"  # offline wheelhouse (pip --no-index --find-links)
repo_dir: str = "/kaggle/input/trm-core-repo"  # trm_core source, put on sys.path if the wheels fail
output_dir: str = "/kaggle/working"  # submission.json and kaggle_log.jsonl
work_dir: str = "/tmp/trm_work"  # built dataset and training runs (kept out of the kernel's output)
budget_minutes: float = 690.0  # from the start of the run to the final submission (Kaggle: 12 h in all)
mode: str = "emb_then_full"  # lora | full | emb_then_full | emb_only | none (no training: sanity baseline)
steps: int = 0  # cap on optimizer steps; 0: as many as the budget allows
batch_size: int = 384  # global batch over all GPUs
micro_batch_size: int = 0  # rows per forward per GPU, for gradient accumulation; 0: the whole share
eval_batch_size: int = 256  # rows per inference forward per GPU
lr: float = 0.0  # trunk / LoRA learning rate; 0: the mode's config value
puzzle_emb_lr: float = 0.0  # puzzle-embedding learning rate; 0: the mode's config value
lr_min_ratio: float = 0.0  # cosine decay to lr x this by the deadline; 0: the mode's config value (1 = flat)
train_aug: int = 1000  # augmented versions of each task to train on
colour_permutation: bool = True  # False: the 8 dihedral transforms only (at most 8 versions of a task)
dihedral_first: bool = False  # True: the plain dihedral versions first, then random colour permutations
vote_aug: int = 512  # augmented versions of each test input that vote (lowered if time runs short)
select: str = "mean_logprob"  # attempts: mean_logprob | votes | poe | votes_then_logprob | hybrid (trm_core/rescore.py)
select_candidates: int = 64  # candidates per test input a likelihood rule re-ranks
select_views: int = 0  # augmented views each candidate is scored under (one inference row each); 0: every view
noise_samples: int = 0  # extra inference passes per row with latent noise that also vote; 0: off
noise_scale: float = 0.0  # standard deviation of that latent noise
pool_checkpoints: int = 1  # pool the votes of the adaptation run's last N checkpoints; 1: the final one
seed: int = 0  # data augmentation and training seed
warmup_steps: int = 20  # steps timed before planning the budget
hidden_rerun_factor: float = 1.34  # the hidden rerun's inference is ~1/3 slower than on the placeholder
safety_margin: float = 0.05  # fraction of the budget left unused at the end
device: str = "auto"  # auto | cpu | cuda
canvas_size: int = 0  # canvas side for scratch weights only; 0: 30

# %% [markdown]
# Install `trm_core` offline, unless it already imports (a local run, or the repo on the path).

# %%
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("trm_core") is None:
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", wheels_dir, "trm_core"]
    print(" ".join(pip))
    print(subprocess.run(pip, capture_output=True, text=True).stdout[-2000:])
else:
    print(f"trm_core already importable: not installing from {wheels_dir}")
if importlib.util.find_spec("trm_core") is None:
    sys.path.insert(0, repo_dir)
import trm_core  # noqa: E402

print("trm_core", trm_core.__version__, "from", trm_core.__file__)

# %% [markdown]
# The whole pipeline, under the deadline. A valid `submission.json` exists after the first seconds; every phase is
# timed in `kaggle_log.jsonl`.

# %%
from trm_core.kaggle import KaggleRunConfig, check_submission, format_result, run_kaggle  # noqa: E402

cfg = KaggleRunConfig(
    data_dir=data_dir, challenges_file=challenges_file or None, solutions_file=solutions_file or None,
    weights=weights_dir, output_dir=output_dir, work_dir=work_dir, budget_minutes=budget_minutes, mode=mode,
    steps=steps or None, batch_size=batch_size, micro_batch_size=micro_batch_size or None,
    eval_batch_size=eval_batch_size, lr=lr or None, puzzle_emb_lr=puzzle_emb_lr or None,
    lr_min_ratio=lr_min_ratio or None, train_aug=train_aug, colour_permutation=colour_permutation,
    dihedral_first=dihedral_first, vote_aug=vote_aug, seed=seed, warmup_steps=warmup_steps, hidden_rerun_factor=hidden_rerun_factor,
    safety_margin=safety_margin, device=device, canvas_size=canvas_size or None, progress=False, select=select,
    select_candidates=select_candidates, select_views=select_views or None, noise_samples=noise_samples,
    noise_scale=noise_scale, pool_checkpoints=pool_checkpoints)
result = run_kaggle(cfg)

# %% [markdown]
# The plan, the time spent per phase, and a last validation of the file Kaggle will read.

# %%
print(format_result(result))
problems = check_submission(result["submission"], result["challenges"])
print("submission.json:", "valid" if not problems else "INVALID")
print("\n".join(problems[:20]))
