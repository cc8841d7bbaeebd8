"""Training: pretraining, post-training and test-time fine-tuning, on one CPU or many GPUs.

    # one process (CPU or one GPU)
    trm train --config-name cfg_pretrain data_paths="[data/built/arc2concept-aug-1000]" +run_name=arc2
    # 8 GPUs (what the upstream README runs, same flags)
    torchrun --nproc-per-node 8 -m trm_core.train --config-name cfg_pretrain \\
        data_paths="[data/built/arc2concept-aug-1000]" arch.L_cycles=4 +run_name=arc2 ema=True
    # continue a run exactly where it stopped (after a crash or a pod restart)
    trm train --config-name cfg_pretrain data_paths="[...]" +run_name=arc2 resume=runs/arc2
    # test-time fine-tuning from published weights: LoRA, or embeddings first then everything
    trm train --config-name cfg_kaggle_lora data_paths="[data/built/test-aug-1000]" load_checkpoint=weights/model.pt
    trm train --config-name cfg_posttrain data_paths="[...]" load_checkpoint=pretrained/step_723914 \\
        arch.puzzle_emb_len=16

The lifecycle follows torchtune's recipes: `Trainer(cfg).setup()` -> `.train()` (which calls `.evaluate()` and
`.save_checkpoint()`) -> `.cleanup()`. One code path serves world size 1 and N (torchrun, nccl or gloo); rank 0
logs and writes. The global batch is split over ranks and, with `micro_batch_size`, into micro-batches with one
ACT carry each, so one GPU trains with the same global batch and numerics as eight.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trm_core import dist as trm_dist
from trm_core.checkpoint import checkpoint_steps, latest_checkpoint
from trm_core.config import (ArchConfig, ConfigError, apply_overrides, from_dict, load_yaml, save_yaml, to_dict)
from trm_core.utils import Progress, atomic_torch_save, atomic_write_text, seed_everything, weights_only_refusal

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainConfig:
    """Everything a run needs; field names follow upstream's `cfg_pretrain.yaml` where one exists."""

    arch: dict = field(default_factory=dict)  # ArchConfig fields; seq_len/vocab/num ids come from the dataset
    lora: dict | None = None  # LoraConfig fields (rank, alpha, dropout, ...); None = no LoRA
    data_paths: list[str] = field(default_factory=list)
    data_paths_test: list[str] = field(default_factory=list)  # evaluation data; [] = data_paths
    global_batch_size: int = 768
    micro_batch_size: int | None = None  # rows per forward on each rank; None = global_batch_size / world_size
    epochs: int = 100000
    eval_interval: int | None = 10000  # epochs between evaluations; None = only at the end
    evaluate: bool = True  # run inference + voting + pass@K on the test split at each evaluation
    min_eval_interval: int = 0  # skip the evaluations of the first this-many intervals (upstream's rule)
    # Upstream's evaluator never clears its votes: each evaluation's pass@K and submission pool every earlier
    # evaluation of the run (its aggregated_voting=True). False = each evaluation votes on its own predictions.
    aggregated_voting: bool = False
    count_empty_predictions: bool = False  # empty predictions take votes / pass@K slots, as upstream counts them
    max_steps: int | None = None  # stop early (smoke tests, deadlines); None = the schedule's total steps
    max_train_seconds: float | None = None  # wall-clock budget for the training loop (checked every step)
    optimizer: str = "adam_atan2"  # upstream's AdamATan2 | adam_atan2_pytorch (the fork's, a = 1.27; see optim.py)
    lr: float = 1e-4
    lr_min_ratio: float = 1.0  # 1.0 = constant after warmup (upstream's default); < 1: cosine decay to lr x this
    # at total_steps, or when max_train_seconds is up if that comes first
    lr_warmup_steps: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    ema: bool = False
    ema_rate: float = 0.999
    freeze_weights: bool = False  # train the puzzle embeddings only (trunk gradients are not computed)
    freeze_weights_epochs: int | None = None  # embeddings only for this many epochs, then everything
    load_checkpoint: str | None = None  # start from these weights (any format trm_core loads)
    # when the loaded table's size differs: mean | normal (re-initialise it); keep = the checkpoint was trained on
    # this very dataset: use its rows as they are, and refuse a table that does not match the identifiers
    puzzle_emb_reinit_strategy: str = "mean"
    resume: str | None = None  # a run folder (or a checkpoint folder in it) to continue exactly
    checkpoint_every_eval: bool = True
    checkpoint_every_n_steps: int | None = None
    keep_last_checkpoints: int = 3
    eval_max_augmentations: int | None = None  # cap augmented versions per task at evaluation
    # How evaluations choose the attempts: trm_core.rescore.Selection fields (rule, candidates, views,
    # noise_scale, noise_samples, noise_seed); None = the default (mean_logprob over every view). Likelihood
    # rules also log every rule's pass@K. {"rule": "votes"} = upstream's choice, at no extra cost.
    eval_selection: dict | None = None
    # > 1: each evaluation also writes eval/step_N/pooled_last_N/ from the last N evaluations' predictions.json
    # (a sliding window of checkpoints as an ensemble, like `trm pool`); aggregated_voting pools every
    # evaluation into the evaluation's own outputs instead (upstream parity).
    pool_last_n: int = 1
    max_examples_per_puzzle: int | None = None
    eval_batch_size: int | None = None  # rows per eval forward on each rank; None = micro/local batch
    seed: int = 0
    run_name: str | None = None
    project_name: str | None = None
    output_dir: str = "runs"  # the run folder is <output_dir>/<run_name>
    device: str = "auto"  # auto | cpu | cuda
    compile: bool | None = None  # torch.compile of the recursion; None = on for CUDA, off on CPU
    wandb: bool = False  # log to wandb too (if installed; WANDB_MODE=offline works without an account)
    log_every: int = 1
    progress: bool = True


def load_config(config_name: str = "cfg_pretrain", overrides: list[str] = (), config_dir: str | Path | None = None
                ) -> TrainConfig:
    """Load `configs/<config_name>.yaml` (or a path), apply `arch=NAME` and dotted overrides, validate."""
    path = Path(config_name)
    if not path.suffix:
        path = Path(config_dir or CONFIG_DIR) / f"{config_name}.yaml"
    data = load_yaml(path)
    overrides = list(overrides)
    # `arch=NAME` (Hydra group syntax) swaps in configs/arch/NAME.yaml before the dotted arch.* overrides.
    for item in [o for o in overrides if o.lstrip("+").startswith("arch=")]:
        overrides.remove(item)
        data["arch"] = load_yaml(CONFIG_DIR / "arch" / f"{item.split('=', 1)[1].strip()}.yaml")
    if isinstance(data.get("arch"), str):
        data["arch"] = load_yaml(CONFIG_DIR / "arch" / f"{data['arch']}.yaml")
    apply_overrides(data, overrides)
    cfg = from_dict(TrainConfig, data, str(path))
    validate_config(cfg, str(path))
    return cfg


def validate_config(cfg: TrainConfig, source: str = "config") -> None:
    from trm_core.lora import LoraConfig

    dataset_fields = {"seq_len", "vocab_size", "num_puzzle_identifiers"}
    from_dict(ArchConfig, {k: v for k, v in cfg.arch.items() if k not in dataset_fields}, f"{source}: arch")
    if cfg.lora is not None:
        from_dict(LoraConfig, cfg.lora, f"{source}: lora")
    if cfg.puzzle_emb_reinit_strategy not in ("mean", "normal", "keep"):
        raise ConfigError(f"{source}: puzzle_emb_reinit_strategy must be mean, normal or keep")
    if cfg.optimizer not in ("adam_atan2", "adam_atan2_pytorch"):
        raise ConfigError(f"{source}: optimizer must be adam_atan2 (upstream) or adam_atan2_pytorch (Trelis fork), "
                          f"got {cfg.optimizer!r}")
    if cfg.min_eval_interval < 0:
        raise ConfigError(f"{source}: min_eval_interval must be >= 0")
    if cfg.global_batch_size < 1 or cfg.epochs < 1:
        raise ConfigError(f"{source}: global_batch_size and epochs must be >= 1")
    if cfg.eval_interval is not None and cfg.epochs % cfg.eval_interval:
        raise ConfigError(f"{source}: eval_interval ({cfg.eval_interval}) must divide epochs ({cfg.epochs})")
    if cfg.freeze_weights and cfg.freeze_weights_epochs is not None:
        raise ConfigError(f"{source}: set freeze_weights (whole run) or freeze_weights_epochs (first epochs), not both")
    if cfg.freeze_weights_epochs is not None and cfg.lora is not None:
        raise ConfigError(f"{source}: freeze_weights_epochs unfreezes every weight, which a lora run keeps frozen")
    if cfg.freeze_weights and cfg.lora is not None:
        raise ConfigError(f"{source}: freeze_weights trains only the embeddings, so a lora section would never train")
    if cfg.pool_last_n < 1:
        raise ConfigError(f"{source}: pool_last_n must be >= 1, got {cfg.pool_last_n}")
    if cfg.eval_selection is not None:
        from trm_core.rescore import Selection

        try:
            Selection(**cfg.eval_selection)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: eval_selection: {e}") from None


# ----------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------

class Trainer:
    """Training lifecycle: setup -> train (evaluate, save_checkpoint) -> cleanup.

    Features and the flag that turns each on:
      - data parallel over torchrun ranks (automatic), gradient accumulation (`micro_batch_size`);
      - EMA of trainable weights (`ema=True`, ~1x trunk memory; the puzzle table is not copied);
      - embeddings-only training (`freeze_weights`), embeddings first (`freeze_weights_epochs`), LoRA (`lora:`);
      - exact resume (`resume=RUN_DIR`): weights, EMA, optimizers, step, data position, ACT carries, RNGs;
      - torch.compile of the recursion (`compile`, default on for CUDA), bf16 on GPU / fp32 on CPU (arch).
    """

    def __init__(self, cfg: TrainConfig, info: trm_dist.DistInfo | None = None, command: list[str] | None = None):
        self.cfg = cfg
        self.info = info or trm_dist.DistInfo()
        self.command = command
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.carries: list | None = None
        self.history: list[dict] = []
        self.run_dir: Path | None = None
        self._last_eval_step: int | None = None
        self._elapsed = 0.0  # training seconds so far, averaged over ranks (with max_train_seconds only)
        self.vote_pool = None  # with aggregated_voting: the votes of every evaluation so far (rank 0)

    # --- setup ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, info = self.cfg, self.info
        seed_everything(cfg.seed + info.rank)
        if info.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._setup_run_dir()
        self._setup_data()
        self._setup_model()
        self._setup_optimizers()
        if cfg.resume:
            self._resume(cfg.resume)
        if info.is_main:
            self._write_provenance()
            if cfg.wandb:
                self._setup_wandb()

    def _setup_run_dir(self) -> None:
        cfg = self.cfg
        if cfg.run_name is None:
            stem = Path(cfg.data_paths[0]).name if cfg.data_paths else "run"
            cfg.run_name = trm_dist.broadcast_object(f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}", self.info)
        if cfg.project_name is None and cfg.data_paths:
            cfg.project_name = f"{Path(cfg.data_paths[0]).name.capitalize()}-ACT-torch"
        if cfg.resume and (Path(cfg.resume) / "config.yaml").exists():
            self.run_dir = Path(cfg.resume)
        elif cfg.resume and (Path(cfg.resume).parent.name == "checkpoints"):
            self.run_dir = Path(cfg.resume).parent.parent
        else:
            self.run_dir = Path(cfg.output_dir) / cfg.run_name
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        trm_dist.barrier(self.info)

    def _setup_data(self) -> None:
        from trm_core.data.dataset import PuzzleDataset

        cfg, info = self.cfg, self.info
        if not cfg.data_paths:
            raise ConfigError("data_paths is empty: pass data_paths=\"[path/to/built/dataset]\" (see trm build-data)")
        self._set_batch_layout()  # batch errors before the dataset is read
        self.train_data = PuzzleDataset(cfg.data_paths, "train", global_batch_size=cfg.global_batch_size,
                                        rank=info.rank, world_size=info.world_size, seed=cfg.seed,
                                        max_examples_per_puzzle=cfg.max_examples_per_puzzle)
        self.metadata = self.train_data.metadata
        if self.train_data.batches_per_epoch(0) == 0:
            raise ConfigError(f"global_batch_size ({cfg.global_batch_size}) is larger than one epoch of "
                              f"{cfg.data_paths} ({self.train_data.rows_per_epoch(0)} rows: one augmented version "
                              "of each task's examples): lower it, or the run would train 0 steps")
        self.total_steps = self.train_data.total_train_steps(cfg.epochs)
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.freeze_until_step = 0
        if cfg.freeze_weights_epochs:
            full = self.train_data.total_train_steps(cfg.epochs)
            self.freeze_until_step = math.ceil(full * cfg.freeze_weights_epochs / cfg.epochs)

    def _set_batch_layout(self) -> None:
        cfg = self.cfg
        if cfg.global_batch_size % self.info.world_size:
            raise ConfigError(f"global_batch_size ({cfg.global_batch_size}) must be divisible by the number of "
                              f"processes ({self.info.world_size})")
        self.local_batch = cfg.global_batch_size // self.info.world_size
        self.micro = cfg.micro_batch_size or self.local_batch
        if self.local_batch % self.micro:
            raise ConfigError(f"micro_batch_size ({self.micro}) must divide the per-process batch ({self.local_batch})")
        self.n_micro = self.local_batch // self.micro

    def setup_without_data(self, metadata, total_steps: int | None = None) -> None:
        """The model and optimizers `setup()` would build for a dataset described by `metadata` (a
        `DatasetMetadata`, or anything with seq_len, vocab_size and num_puzzle_identifiers), without reading one
        or writing a run folder: for benchmarks and custom loops that call `train_step` with their own batches.
        `total_steps` sizes the learning-rate schedule (default: `max_steps`, else flat after warmup)."""
        seed_everything(self.cfg.seed + self.info.rank)
        self.train_data, self.metadata = None, metadata
        self._set_batch_layout()
        self.total_steps = total_steps or self.cfg.max_steps or 10**9
        self.freeze_until_step = 0
        self._setup_model()
        self._setup_optimizers()

    def _setup_model(self) -> None:
        from trm_core.model import ACTLossHead, build_model

        cfg, meta = self.cfg, self.metadata
        if cfg.load_checkpoint:
            from trm_core.checkpoint import load_checkpoint

            # Architecture from the checkpoint; cfg.arch only fills what it does not record (and must agree).
            # "keep": the rows are used as trained, so the table must fit this dataset's identifiers (refused
            # otherwise, naming both sizes).
            keep = cfg.puzzle_emb_reinit_strategy == "keep"
            identifiers = Path(cfg.data_paths[0]) / "identifiers.json"
            model = load_checkpoint(cfg.load_checkpoint, num_puzzle_identifiers=meta.num_puzzle_identifiers,
                                    puzzle_emb_reinit=cfg.puzzle_emb_reinit_strategy,
                                    identifiers_path=identifiers if keep and identifiers.exists() else None, **cfg.arch)
        else:
            model = build_model(from_dict(ArchConfig, dict(cfg.arch, seq_len=meta.seq_len, vocab_size=meta.vocab_size,
                                                           num_puzzle_identifiers=meta.num_puzzle_identifiers), "arch"))
        if (model.config.seq_len, model.config.vocab_size) != (meta.seq_len, meta.vocab_size):
            raise ConfigError(f"the model's seq_len/vocab ({model.config.seq_len}/{model.config.vocab_size}) differ "
                              f"from the dataset's ({meta.seq_len}/{meta.vocab_size}, canvas {meta.canvas_size}); "
                              "rebuild the data with the model's canvas (trm build-data --canvas-size)")
        self.lora_cfg = None
        if cfg.lora is not None:
            from trm_core.lora import LoraConfig, apply_lora

            self.lora_cfg = from_dict(LoraConfig, cfg.lora, "lora")
            apply_lora(model, self.lora_cfg)
        elif cfg.freeze_weights:
            model.requires_grad_(False)
        self.model = model.to(self.info.device).train()
        self.head = ACTLossHead(self.model)
        self.compiled = cfg.compile if cfg.compile is not None else self.info.device.type == "cuda"
        if self.compiled:
            self.model.inner.L_level.compile()  # in place: parameter names (and checkpoints) are unchanged
        trm_dist.broadcast_module_(self.model, self.info)
        self._trunk_frozen = False

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _set_trunk_frozen(self, frozen: bool) -> None:
        """Embeddings-only phase: trunk weights stop requiring grad, so their gradients are never computed."""
        for p in self.model.parameters():
            p.requires_grad_(not frozen)
        self._trunk_frozen = frozen

    def _setup_optimizers(self) -> None:
        from trm_core.optim import EMA, OPTIMIZERS, SignSGDSparseEmbedding

        cfg = self.cfg
        self.optimizers: dict[str, Any] = {}
        if self.model.puzzle_emb is not None:
            self.optimizers["puzzle_emb"] = SignSGDSparseEmbedding(
                self.model.puzzle_emb, lr=0.0, weight_decay=cfg.puzzle_emb_weight_decay, dist=self.info)
        params = self.trainable_parameters()
        if params:
            self.optimizers["trunk"] = OPTIMIZERS[cfg.optimizer](params, lr=0.0, betas=(cfg.beta1, cfg.beta2),
                                                                 weight_decay=cfg.weight_decay)
        self.base_lrs = {"puzzle_emb": cfg.puzzle_emb_lr, "trunk": cfg.lr}
        self.ema = EMA(self.model, mu=cfg.ema_rate) if cfg.ema else None
        # Embeddings-only phase: freeze after the optimizer and EMA have registered every weight that will train.
        if self.freeze_until_step > 0:
            self._set_trunk_frozen(True)

    # --- training ------------------------------------------------------------------------------------------
    def lr_for(self, name: str) -> float:
        from trm_core.optim import lr_at_step

        cfg, step = self.cfg, float(self.step)
        if cfg.max_train_seconds and step >= cfg.lr_warmup_steps:
            # Under a deadline the decay also follows the clock (elapsed time agreed by all ranks), so a run
            # slower than planned still reaches lr_min_ratio when its time is up instead of stopping mid-decay.
            frac = min(1.0, self._elapsed / cfg.max_train_seconds)
            step = max(step, cfg.lr_warmup_steps + frac * (self.total_steps - cfg.lr_warmup_steps))
        return lr_at_step(step, self.base_lrs[name], cfg.lr_warmup_steps, self.total_steps, cfg.lr_min_ratio)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.info.device.type == "cuda"
        return {k: v.to(self.info.device, non_blocking=non_blocking) for k, v in batch.items()}

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimizer step on one global batch (this rank's share, in micro-batches)."""
        self.step += 1
        if self._trunk_frozen and self.step > self.freeze_until_step:
            self._set_trunk_frozen(False)
            if self.info.is_main:
                print(f"step {self.step}: embeddings-only phase over, training every weight", file=sys.stderr)
        batch = self._to_device(batch)
        if self.carries is None:
            self.carries = [self.head.initial_carry({k: v[i * self.micro:(i + 1) * self.micro] for k, v in
                                                     batch.items()}) for i in range(self.n_micro)]
        metric_sum: dict[str, torch.Tensor] = {}
        for i in range(self.n_micro):
            micro = {k: v[i * self.micro:(i + 1) * self.micro] for k, v in batch.items()}
            self.carries[i], loss, metrics, _, _ = self.head(self.carries[i], micro)
            # Loss is a sum over rows; dividing by the *global* batch makes the all-reduced sum the global mean.
            (loss / self.cfg.global_batch_size).backward()
            for k, v in metrics.items():
                metric_sum[k] = metric_sum.get(k, 0) + v.detach().float()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        trm_dist.all_reduce_sum_(grads, self.info)
        lrs = {}
        for name, opt in self.optimizers.items():
            lrs[name] = self.lr_for(name)
            for group in opt.param_groups:
                group["lr"] = lrs[name]
            opt.step()
            opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        return self._reduce_metrics(metric_sum, lrs)

    def _reduce_metrics(self, metric_sum: dict[str, torch.Tensor], lrs: dict[str, float]) -> dict[str, float]:
        keys = sorted(metric_sum)
        stacked = torch.stack([metric_sum[k] for k in keys])
        trm_dist.all_reduce_sum_([stacked], self.info)
        values = dict(zip(keys, stacked.tolist()))
        count = max(values.get("count", 0.0), 1.0)
        out = {f"train/{k}": (v / self.cfg.global_batch_size if k.endswith("loss") else v / count)
               for k, v in values.items() if k != "count"}
        out["train/count"] = values.get("count", 0.0)
        for name, lr in lrs.items():
            out[f"train/lr{'' if name == 'trunk' else '_' + name}"] = lr
        return out

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        eval_every = cfg.eval_interval or cfg.epochs
        start = time.perf_counter()
        bar = Progress(self.total_steps, desc="train", unit="step", enabled=cfg.progress and self.info.is_main)
        bar.n = self.step
        last_metrics: dict[str, float] = {}
        stop = self.step >= self.total_steps
        while not stop and self.epoch < cfg.epochs:
            for batch in self.train_data.iter_train(self.epoch, start_batch=self.batch_in_epoch):
                self.batch_in_epoch += 1
                t0 = time.perf_counter()
                metrics = self.train_step(batch)
                metrics["train/step_time_s"] = time.perf_counter() - t0
                metrics["train/examples_per_s"] = cfg.global_batch_size / metrics["train/step_time_s"]
                last_metrics = metrics
                if self.info.is_main and self.step % cfg.log_every == 0:
                    self._log(metrics)
                bar.update(1, postfix=f"loss {metrics.get('train/lm_loss', float('nan')):.4f} "
                                      f"acc {metrics.get('train/accuracy', 0):.3f}")
                if cfg.checkpoint_every_n_steps and self.step % cfg.checkpoint_every_n_steps == 0:
                    self.save_checkpoint()
                if self.step >= self.total_steps or self._out_of_time(start):
                    stop = True
                    break
            else:
                self.epoch += 1
                self.batch_in_epoch = 0
                # Upstream evaluates after interval i (0-based) when i >= min_eval_interval: the first
                # evaluation comes after min_eval_interval + 1 intervals.
                if self.epoch % eval_every == 0 and self.epoch // eval_every - 1 >= cfg.min_eval_interval:
                    self._evaluate_and_checkpoint()
        bar.close()
        self._evaluate_and_checkpoint(final=True)
        return last_metrics

    def _out_of_time(self, start: float) -> bool:
        """Past `max_train_seconds` on any rank: decided together, or one rank would leave the others waiting
        in the next all-reduce."""
        if self.cfg.max_train_seconds is None:
            return False
        elapsed = time.perf_counter() - start
        agreed = torch.tensor([float(elapsed > self.cfg.max_train_seconds), elapsed], device=self.info.device,
                              dtype=torch.float64)
        trm_dist.all_reduce_sum_([agreed], self.info)
        self._elapsed = agreed[1].item() / self.info.world_size  # the same value on every rank (see lr_for)
        return bool(agreed[0].item() > 0)

    def _evaluate_and_checkpoint(self, final: bool = False) -> None:
        if final and self._last_eval_step == self.step:
            return
        self._last_eval_step = self.step
        self.evaluate()
        if self.cfg.checkpoint_every_eval or final:
            self.save_checkpoint()

    # --- evaluation ----------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float] | None:
        """Inference + voting + pass@K on the test split of `data_paths_test` (or `data_paths`), EMA weights."""
        from trm_core import evaluate as trm_eval

        if not self.cfg.evaluate:
            return None
        paths = self.cfg.data_paths_test or self.cfg.data_paths
        with_test = [p for p in paths if (Path(p) / "test" / "dataset.json").exists()
                     and (Path(p) / "test_puzzles.json").exists()]
        if not with_test:
            return None
        out_dir = self.run_dir / "eval" / f"step_{self.step}"
        if self.cfg.aggregated_voting and self.vote_pool is None:
            self.vote_pool = trm_eval.VotePool()
        ctx = self.ema.apply_to(self.model) if self.ema is not None else contextlib.nullcontext()
        selection = None
        if self.cfg.eval_selection is not None:
            from trm_core.rescore import Selection

            selection = Selection(**self.cfg.eval_selection)
        with ctx:  # self.model's recursion is the compiled one when compile is on, as upstream evaluates
            metrics = trm_eval.evaluate_model(self.model, with_test[0], out_dir, info=self.info,
                                              batch_size=self.cfg.eval_batch_size or self.micro,
                                              max_eval_augmentations=self.cfg.eval_max_augmentations,
                                              progress=self.cfg.progress, extra={"step": self.step},
                                              count_empty_predictions=self.cfg.count_empty_predictions,
                                              vote_pool=self.vote_pool if self.info.is_main else None,
                                              selection=selection)
        self.model.train()
        if self.info.is_main and metrics and self.cfg.pool_last_n > 1:
            from trm_core.submission import pool_last_evaluations

            pooled = pool_last_evaluations(self.run_dir / "eval", self.cfg.pool_last_n, with_test[0])
            metrics.update({f"pooled/{k}": v for k, v in pooled.items()
                            if k.startswith("ARC/") or k in ("kaggle_score", "evaluations")})
        if self.info.is_main and metrics:
            # upstream's names as it logs them (ARC/pass@K, all/accuracy, ...); the rest under eval/
            self._log({k if k.startswith(("ARC/", "all/")) else f"eval/{k}": v for k, v in metrics.items()})
            self._plot_curves()
        return metrics

    # --- checkpoints ---------------------------------------------------------------------------------------
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Write `checkpoints/step_N/` atomically: build it as a hidden temp folder, then rename.

        model.pt (our format; EMA weights when EMA is on, as upstream saves them) is what evaluation and export
        read; train_state.pt (rank 0) and carry_rank{r}.pt (each rank) hold what exact resume needs.
        """
        from trm_core.checkpoint import save_checkpoint

        final = self.checkpoint_dir() / f"step_{self.step}"
        tmp = self.checkpoint_dir() / f".step_{self.step}.tmp"
        if self.info.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        trm_dist.barrier(self.info)
        atomic_torch_save(self._rank_state(), tmp / f"carry_rank{self.info.rank}.pt")
        if self.info.is_main:
            identifiers = Path(self.cfg.data_paths[0]) / "identifiers.json"
            ctx = self.ema.apply_to(self.model) if self.ema is not None else contextlib.nullcontext()
            with ctx:
                save_checkpoint(tmp / "model.pt", self.model, identifiers_path=identifiers if identifiers.exists()
                                else None, lora=self.lora_cfg, extra={"step": self.step, "run_name": self.cfg.run_name})
            atomic_torch_save(self._train_state(), tmp / "train_state.pt")
            save_yaml(self.cfg, tmp / "config.yaml")
        trm_dist.barrier(self.info)
        if self.info.is_main:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune_checkpoints()
        trm_dist.barrier(self.info)
        return final

    def _train_state(self) -> dict:
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.info.world_size, "micro_batch_size": self.micro,
            "model": self.model.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "trunk_frozen": self._trunk_frozen,
            "history": self.history[-10000:],
            "vote_pool": self.vote_pool.state_dict() if self.vote_pool is not None else None,
        }

    def _rank_state(self) -> dict:
        """This rank's ACT carries and RNG states, as tensors and plain types only (loadable with
        weights_only=True: a checkpoint folder from elsewhere cannot run code when resumed)."""
        carries = None
        if self.carries is not None:
            carries = [{"inner": list(c.inner), "steps": c.steps, "halted": c.halted, "current_data": c.current_data}
                       for c in self.carries]
        state = {"carries": carries, **rng_state()}
        if torch.cuda.is_available() and self.info.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.info.device)
        return state

    def _prune_checkpoints(self) -> None:
        keep = self.cfg.keep_last_checkpoints
        steps = sorted(checkpoint_steps(self.checkpoint_dir()))
        for s in steps[:-keep] if keep > 0 else []:
            shutil.rmtree(self.checkpoint_dir() / f"step_{s}", ignore_errors=True)

    def _resume(self, path: str) -> None:
        from trm_core.model import Carry

        ckpt = latest_checkpoint(Path(path))
        if ckpt is None:
            if self.info.is_main:
                print(f"resume: no checkpoint under {path} yet, starting from scratch", file=sys.stderr)
            return
        state = load_resume_file(ckpt / "train_state.pt", self.info.device, TRAIN_STATE_KEYS)
        if (state["world_size"], state["micro_batch_size"]) != (self.info.world_size, self.micro):
            raise ConfigError(f"resume: {ckpt} was written by {state['world_size']} process(es) with micro-batches of "
                              f"{state['micro_batch_size']}; this run has {self.info.world_size} and {self.micro}. "
                              "Exact resume needs the same layout (the ACT carries are per process and micro-batch).")
        try:  # a state that does not fit this run (or was edited) is named, not a traceback
            self.model.load_state_dict(state["model"])
            if state["trunk_frozen"] != self._trunk_frozen:
                self._set_trunk_frozen(state["trunk_frozen"])
            for name, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            if self.ema is not None and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
        except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as e:
            raise ConfigError(f"resume: {ckpt / 'train_state.pt'}: does not fit this run "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.history = state.get("history", [])
        if state.get("vote_pool") is not None and self.cfg.aggregated_voting:
            from trm_core.voting import VotePool

            self.vote_pool = VotePool()
            self.vote_pool.load_state_dict(state["vote_pool"])
        rank_file = ckpt / f"carry_rank{self.info.rank}.pt"
        rank_state = load_resume_file(rank_file, "cpu", RANK_STATE_KEYS)  # RNG states must stay on the CPU
        dev = self.info.device
        try:
            if rank_state["carries"] is not None:
                self.carries = [Carry(tuple(t.to(dev) for t in c["inner"]), c["steps"].to(dev), c["halted"].to(dev),
                                      {k: v.to(dev) for k, v in c["current_data"].items()})
                                for c in rank_state["carries"]]
            set_rng_state(rank_state)
            if "cuda_rng" in rank_state:
                torch.cuda.set_rng_state(rank_state["cuda_rng"], dev)
        except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as e:
            raise ConfigError(f"resume: {rank_file}: ACT carries or RNG states not usable "
                              f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from None
        if self.info.is_main:
            self._truncate_metrics()
            print(f"resumed from {ckpt} at step {self.step}", file=sys.stderr)

    def _truncate_metrics(self) -> None:
        """Drop the metrics.jsonl lines written after the checkpoint being resumed (a killed run logged steps that
        the resumed run logs again), and a line torn by the kill, so every step appears once."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept, dropped = [], 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    step = json.loads(line).get("step")
                except (ValueError, AttributeError):
                    step = None
                if isinstance(step, int) and step <= self.step and line.endswith("\n"):
                    kept.append(line)
                else:
                    dropped += 1
        if dropped:
            atomic_write_text(path, "".join(kept))
            print(f"resume: dropped {dropped} metrics.jsonl line(s) past step {self.step}", file=sys.stderr)

    # --- logging -------------------------------------------------------------------------------------------
    def _log(self, metrics: dict[str, float]) -> None:
        record = {"step": self.step, "epoch": self.epoch, "time": time.time(), **metrics}
        self.history.append(record)
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if getattr(self, "_wandb", None) is not None:
            self._wandb.log(metrics, step=self.step)

    def _plot_curves(self) -> None:
        from trm_core.plots import plot_learning_curves

        plot_learning_curves(self.run_dir / "metrics.jsonl", self.run_dir / "learning_curves.png")

    def _setup_wandb(self) -> None:
        try:
            import wandb  # type: ignore[import-not-found]
        except ImportError:
            print("wandb=True but wandb is not installed: logging to metrics.jsonl only", file=sys.stderr)
            self._wandb = None
            return
        self._wandb = wandb.init(project=self.cfg.project_name, name=self.cfg.run_name, config=to_dict(self.cfg))

    def _write_provenance(self) -> None:
        save_yaml(self.cfg, self.run_dir / "config.yaml")
        # A line a shell can run again: the working folder, then the command with every argument quoted.
        cmd = f"cd {shlex.quote(os.getcwd())} && {shlex.join(self.command or sys.argv)}"
        with open(self.run_dir / "COMMANDS.txt", "a") as f:
            f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} world_size={self.info.world_size}\n{cmd}\n")
        atomic_write_text(self.run_dir / "ENVIRONMENT.txt", environment_report())

    def cleanup(self) -> None:
        if getattr(self, "_wandb", None) is not None:
            self._wandb.finish()


TRAIN_STATE_KEYS = ("step", "epoch", "batch_in_epoch", "world_size", "micro_batch_size", "model", "optimizers",
                    "ema", "trunk_frozen")
RANK_STATE_KEYS = ("carries", "torch_rng", "numpy_rng", "python_rng")


def rng_state() -> dict:
    """The torch CPU, numpy and Python RNG states as tensors and plain types (weights_only=True loads them)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {"torch_rng": torch.get_rng_state(),
            "numpy_rng": {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                          "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
            "python_rng": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                           "gauss": None if py_gauss is None else float(py_gauss)}}


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved, exactly."""
    torch.set_rng_state(state["torch_rng"])
    n = state["numpy_rng"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python_rng"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))


def _numpy_array_globals() -> list:
    """What unpickling a plain numpy array needs: its reconstructor, ndarray and dtypes. None of them can run
    code, so allowing them keeps weights_only's guarantee; resume files of trm_core before RNG states were stored
    as tensors hold numpy's RNG state (a uint32 array) this way."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _upgrade_rng_state(state: dict) -> dict:
    """Older resume files kept numpy's and Python's RNG states as the tuples their get_state() return; convert
    them to what `rng_state` writes now, exactly (the same draws follow)."""
    n, p = state.get("numpy_rng"), state.get("python_rng")
    if isinstance(n, tuple) and len(n) == 5:
        name, keys, pos, has_gauss, gauss = n
        state["numpy_rng"] = {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                              "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
    if isinstance(p, tuple) and len(p) == 3:
        version, internal, py_gauss = p
        state["python_rng"] = {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                               "gauss": None if py_gauss is None else float(py_gauss)}
    return state


def load_resume_file(path: Path, map_location: Any, required: tuple[str, ...]) -> dict:
    """A resume file (train_state.pt, carry_rank*.pt) read with weights_only=True: tensors, plain types and
    plain numpy arrays only, so a planted pickle payload is refused, never run. Files written before RNG states
    were stored as tensors (numpy arrays and tuples) are read and upgraded, so older runs still resume exactly."""
    import pickle

    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"resume: {path}: missing (an incomplete checkpoint folder?)") from None
    except Exception as e:  # noqa: BLE001 - every failure is one message naming the file
        refused, reason = weights_only_refusal(e)
        if isinstance(e, pickle.UnpicklingError) and refused:
            raise ConfigError(
                f"resume: {path}: refused: it holds Python objects that weights_only loading does not allow "
                f"(planted code?): {reason}. Nothing in it was run. To start from its weights instead: "
                f"load_checkpoint={path.parent}/model.pt"
            ) from None
        raise ConfigError(f"resume: {path}: cannot read it (truncated, corrupt or not a torch file): "
                          f"{type(e).__name__}: {reason}") from None
    if isinstance(state, dict):
        _upgrade_rng_state(state)
    missing = [k for k in required if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"resume: {path}: not a trm_core resume file (missing {missing})")
    return state


def environment_report() -> str:
    """Versions, hardware and git commit, for ENVIRONMENT.txt."""
    lines = [f"python: {sys.version.split()[0]}", f"platform: {platform.platform()}", f"torch: {torch.__version__}",
             f"numpy: {np.__version__}", f"cuda available: {torch.cuda.is_available()}"]
    if torch.cuda.is_available():
        lines.append(f"cuda: {torch.version.cuda}")
        lines += [f"gpu {i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    lines.append(f"cpu count: {os.cpu_count()}")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip()
        # --no-optional-locks: a status cut short (a deadline, a kill) must not leave .git/index.lock behind
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain"], capture_output=True,
                               text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
        lines.append(f"git commit: {commit or 'unknown'}{' (dirty)' if dirty else ''}")
    except (OSError, subprocess.SubprocessError):
        lines.append("git commit: unknown")
    return "\n".join(lines) + "\n"


def run(cfg: TrainConfig, command: list[str] | None = None) -> Trainer:
    """Set up, train and clean up one run in this process (torchrun ranks each call this)."""
    info = trm_dist.init_distributed(cfg.device)
    trainer = Trainer(cfg, info, command)
    try:
        trainer.setup()
        trainer.train()
    finally:
        trainer.cleanup()
    return trainer


def _rerun_command(argv: list[str] | None) -> list[str]:
    """The command that runs this training again: `trm train ARGS` when called through the `trm` dispatcher
    (which passes argv), else `python -m trm_core.train ARGS`, under torchrun when there are several ranks."""
    if argv is not None:
        return ["trm", "train", *argv]
    args = sys.argv[1:]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        nodes = int(os.environ.get("WORLD_SIZE", "1")) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        return ["torchrun", f"--nnodes={nodes}", f"--nproc-per-node={os.environ.get('LOCAL_WORLD_SIZE', '1')}",
                "-m", "trm_core.train", *args]
    return ["python", "-m", "trm_core.train", *args]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="trm train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a TRM.\n\nexample:\n  trm train --config-name cfg_pretrain "
                    "data_paths=\"[data/built/arc2concept-aug-1000]\" arch.L_cycles=4 +run_name=arc2\n"
                    "  torchrun --nproc-per-node 8 -m trm_core.train --config-name cfg_pretrain ...\n\n"
                    f"configs: {', '.join(sorted(p.stem for p in CONFIG_DIR.glob('cfg_*.yaml')))}")
    parser.add_argument("--config-name", default="cfg_pretrain", help="a name under trm_core/configs or a YAML path")
    parser.add_argument("--config-path", default=None, help="folder to look for --config-name in")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides: arch.L_cycles=4 lr=2e-4 +run_name=x")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_name, args.overrides, args.config_path)
    except ConfigError as e:
        print(f"trm train: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    try:
        run(cfg, command=_rerun_command(argv))
    except ConfigError as e:
        print(f"trm train: {e}", file=sys.stderr)
        return 2
    finally:
        trm_dist.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
