"""Adaptation runs of the Kaggle recipe: each mode's training config, and one run in this process or under torchrun.

Modes: `full` (every weight), `emb_then_full` (embeddings only for the first quarter, then every weight: the
recipe of the only published TRM Kaggle run), `emb_only`, `lora` (rank-1 adapters + embeddings), `none` (no
training: a sanity baseline; unseen tasks only have the mean puzzle embedding, so expect ~0).

A run's training settings are the mode's shipped config (`trm_core/configs`) plus the user's dotted overrides
(`lr=2e-4`, `ema=false`, `lora.rank=2`, `arch.hidden_size=64`): they go through `trm train`'s one loader and
validator, so an unknown key or a wrong type is an error naming it. The keys the runner sizes from its plan
(`RUNNER_KEYS`: data, batch, steps, deadline, output folder, ...) cannot be overridden.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

MODES = ("lora", "full", "emb_then_full", "emb_only", "none")
# Base training config of each mode (trm_core/configs); the runner sets RUNNER_KEYS on top.
MODE_CONFIGS = {"full": "cfg_posttrain", "emb_then_full": "cfg_posttrain", "emb_only": "cfg_emb_posttrain",
                "lora": "cfg_kaggle_lora", "none": "cfg_posttrain"}
RUNNER_KEYS = ("data_paths", "data_paths_test", "evaluate", "global_batch_size", "epochs", "eval_interval",
               "max_steps", "max_train_seconds", "load_checkpoint", "freeze_weights_epochs", "eval_batch_size",
               "seed", "device", "progress", "output_dir", "run_name", "resume", "checkpoint_every_eval",
               "checkpoint_every_n_steps", "keep_last_checkpoints")


def adapt_config(mode: str, overrides: Sequence[str], runner: dict, *, scratch: bool = False,
                 planned_steps: int | None = None):
    """The TrainConfig of one adaptation run: the mode's config (with `arch=trm_tiny` under scratch weights), the
    user's `overrides`, then `runner` (RUNNER_KEYS: what the plan sized). `planned_steps` (<= max_steps) is what
    the budget is expected to allow: it sizes emb_then_full's embeddings-only first quarter; the learning-rate
    warm-up is capped at a tenth of max_steps unless an override sets it."""
    from trm_core.config import ConfigError, parse_overrides
    from trm_core.train import load_config, validate_config

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    given = parse_overrides(list(overrides), "train overrides")
    refused = sorted(set(given) & set(RUNNER_KEYS))
    if refused:
        raise ConfigError(f"train overrides: {', '.join(refused)} set by the Kaggle runner from its plan; use the "
                          "run's own settings (batch_size, steps, eval_batch_size, seed, device, ...)")
    cfg = load_config(MODE_CONFIGS[mode], (["arch=trm_tiny"] if scratch else []) + list(overrides))
    for key, value in runner.items():
        if key not in RUNNER_KEYS:
            raise KeyError(f"{key} is not a runner key")
        setattr(cfg, key, value)
    steps, epochs = cfg.max_steps or 0, cfg.epochs
    planned = epochs * min(1.0, (planned_steps or steps) / steps) if steps else epochs
    cfg.freeze_weights_epochs = int(planned) // 4 if mode == "emb_then_full" and planned >= 4 else None
    if "lr_warmup_steps" not in given:
        cfg.lr_warmup_steps = min(cfg.lr_warmup_steps, max(1, steps // 10))
    validate_config(cfg, f"mode {mode}")
    return cfg


def torchrun_command(nproc: int, module_args: list[str], python: str | None = None) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ...` (torchrun, one node)."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", *module_args]


def train_command(nproc: int, config_path: str | Path, python: str | None = None) -> list[str]:
    """The multi-GPU training command: every rank loads the resolved config written by the runner."""
    return torchrun_command(nproc, ["trm_core.train", "--config-name", str(config_path)], python)


class Adaptation:
    """One training run: in this process (`nproc` 1), or under torchrun (its process group is killed if the
    run is stopped). The trainer writes its run folder as `trm train` does (config, metrics.jsonl, the final
    checkpoint), which is what the runner infers with."""

    def __init__(self, cfg, nproc: int, command: list[str]) -> None:
        self.cfg, self.nproc, self.command = cfg, nproc, command
        self.run_dir = Path(cfg.output_dir) / cfg.run_name
        self.trainer = None

    def run(self) -> Path:
        """Train; return the final checkpoint's model.pt."""
        from trm_core import dist as trm_dist
        from trm_core.checkpoint import latest_checkpoint

        if self.nproc > 1:
            self._run_torchrun()
        else:
            from trm_core.train import Trainer

            self.trainer = Trainer(self.cfg, trm_dist.init_distributed(self.cfg.device), self.command)
            try:
                self.trainer.setup()
                self.trainer.train()
            finally:
                self.trainer.cleanup()
                trm_dist.cleanup()
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise RuntimeError(f"{self.cfg.run_name}: training wrote no checkpoint")
        return ckpt / "model.pt"

    def _run_torchrun(self) -> None:
        from trm_core.config import save_yaml

        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.run_dir.parent / f"{self.cfg.run_name}.yaml"  # what every rank reads
        save_yaml(self.cfg, config_path)
        cmd = train_command(self.nproc, config_path)
        proc = subprocess.Popen(cmd, start_new_session=True)
        try:
            rc = proc.wait()
        finally:  # the clock stopped the run (or anything else did): the ranks go too
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if rc != 0:
            raise RuntimeError(f"training exited with {rc}: {' '.join(cmd)}")

    def records(self) -> list[dict]:
        """The run's metrics records so far (the trainer's history, or metrics.jsonl of a torchrun run)."""
        if self.trainer is not None:
            return list(self.trainer.history)
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line being written right now
                pass
        return records

    def step_times(self) -> list[float]:
        return [float(r["train/step_time_s"]) for r in self.records() if "train/step_time_s" in r]

    def heartbeat(self) -> str:
        """`step 120/900, loss 0.412`: where training is (for the run's heartbeat)."""
        last = next((r for r in reversed(self.records()) if "train/lm_loss" in r), None)
        if last is None:
            return "setting up"
        return f"step {last['step']}/{self.cfg.max_steps}, loss {last['train/lm_loss']:.4f}"
