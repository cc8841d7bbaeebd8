"""Checkpoints in, checkpoints out: upstream, Trelis-fork and trm_core files; `trm export` and `trm info`.

    trm info checkpoints/arc2/step_723914               what a file holds, and which settings it lacks
    trm export checkpoints/arc2/step_723914 trm-arc2-trunk --arch puzzle_emb_len=16 L_cycles=4 H_cycles=3 \\
        num_heads=8 halt_max_steps=16                   trunk-only export for a Kaggle dataset (~27 MB)

Formats (see docs/DESIGN.md, "Checkpoints"):
- upstream (`step_N`: `torch.save(model.state_dict())`, keys `_orig_mod.model.inner.*`, `model.inner.*` or
  `inner.*`), with `all_config.yaml` beside it when wandb was on;
- fork: the same plus LoRA keys `..._lora_A` / `..._lora_B`;
- ours: one dict with the arch config, the identifiers hash and `kind` ("full", "trunk", "adapter") beside the
  `inner.*` state_dict.

Nothing loads silently wrong. Shapes give most settings (`infer_arch`); the shape-free ones (puzzle_emb_len,
L_cycles, H_cycles, num_heads, halt_max_steps) come from the caller, else from what is recorded with the file
(ours: stored; foreign: `all_config.yaml`), else loading stops with a message naming each one, its known values
and the fix. A caller value that contradicts a recorded one is refused, except runtime settings (forward_dtype,
halt_max_steps_eval, ...). Every file is read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trm_core.config import (ArchConfig, ConfigError, arch_from_dict, load_yaml, parse_overrides, swiglu_width,
                             to_dict)
from trm_core.lora import LORA_TARGETS, LoraConfig, adapter_state_dict, apply_lora, lora_layers
from trm_core.model import KEY_PREFIX_RE, TRM, build_model, canonical_key
from trm_core.utils import atomic_torch_save, atomic_write_text, sha256_file, weights_only_refusal

FORMAT_VERSION = 1
PUZZLE_TABLE = "inner.puzzle_emb.weights"
ARCH_FIELDS = tuple(f.name for f in dataclasses.fields(ArchConfig))

# Not recoverable from any tensor shape; what published checkpoints used (upstream README ARC runs / Trelis fork).
KNOWN_VALUES = {
    "puzzle_emb_len": "16 for upstream's README ARC runs and every published checkpoint, the Trelis fork's "
                      "TRM-ARC-AGI-II step_723914 and ARC-AGI-1 step_155718 included; 1 only for models trained from "
                      "scratch with the fork's own trm.yaml (its default since 2025-10-26)",
    "L_cycles": "upstream README ARC runs 4 (its yaml default 6), Trelis fork 4",
    "H_cycles": "upstream and fork 3",
    "num_heads": "upstream and fork 8 at hidden 512",
    "halt_max_steps": "upstream and fork 16",
    "pos_encodings": "rope for attention models, none for upstream's Sudoku mlp_t",
}
REQUIRED_FOREIGN = ("puzzle_emb_len", "L_cycles", "H_cycles", "num_heads", "halt_max_steps")
# Settings that change no weight and no meaning of a weight: a caller may always override them.
RUNTIME_SETTINGS = ("forward_dtype", "halt_max_steps_eval", "halt_exploration_prob", "puzzle_emb_dropout",
                    "grid_token_dropout", "loss_type", "loss_dtype", "attn_backend")
LORA_ARCH_KEYS = ("lora_rank", "lora_alpha", "lora_dropout")  # the fork's arch names, accepted in **arch
FORK_LORA_ALPHA = 1.0  # the fork's config default (trm.py `lora_alpha: float = 1.0`) when its yaml gives none
FOREIGN_SEQ_LEN = 900  # 30x30 canvas: every published checkpoint


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not determine the model; the message says which file and why."""


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------

@dataclass
class CheckpointContents:
    """What `read_checkpoint` found in a file."""

    path: Path
    format: str  # "trm_core" | "upstream" | "fork"
    kind: str  # "full" | "trunk" | "adapter"
    state_dict: dict[str, torch.Tensor]  # canonical `inner.*` keys
    arch: dict[str, Any]  # recorded settings: ours all of ArchConfig; foreign those of all_config.yaml
    arch_source: str | None  # "stored in the checkpoint", the all_config.yaml path, or None
    identifiers_sha256: str | None = None
    lora: LoraConfig | None = None
    key_prefixes: list[str] = field(default_factory=list)  # spellings found, e.g. ["_orig_mod.model."]
    ignored_config_keys: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def checkpoint_steps(folder: Path) -> list[int]:
    """Steps of the complete checkpoints (`step_N` folders; temp folders start with a dot) under `folder`."""
    if not folder.is_dir():
        return []
    return [int(p.name[5:]) for p in folder.iterdir() if p.is_dir() and p.name.startswith("step_")
            and p.name[5:].isdigit() and (p / "train_state.pt").exists()]


def latest_checkpoint(path: Path) -> Path | None:
    """The newest complete checkpoint folder of a run folder, of its checkpoints folder, or the folder itself."""
    if (path / "train_state.pt").exists():
        return path
    for folder in (path / "checkpoints", path):
        steps = checkpoint_steps(folder)
        if steps:
            return folder / f"step_{max(steps)}"
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """The one checkpoint file behind `path`, for every reader (load, info, export, the Kaggle runner's weights).

    A file; a folder holding `model.pt` (an export, or one checkpoint); a run folder (its newest complete
    `checkpoints/step_N/model.pt`); a folder of upstream `step_N` files (the last step); a folder holding one
    `*.pt` file (a Kaggle dataset of one file).
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    if (path / "model.pt").is_file():
        return path / "model.pt"
    latest = latest_checkpoint(path)
    if latest is not None and (latest / "model.pt").is_file():
        return latest / "model.pt"
    steps = sorted((p for p in path.glob("step_*") if p.is_file() and re.fullmatch(r"step_\d+", p.name)),
                   key=lambda p: int(p.name[5:]))
    if steps:
        return steps[-1]
    pts = sorted(p for p in path.glob("*.pt") if p.is_file())
    if len(pts) == 1:
        return pts[0]
    found = f"; several .pt files ({', '.join(p.name for p in pts[:5])}): name one" if pts else ""
    raise CheckpointError(f"{path}: folder has neither model.pt nor step_N checkpoint files (nor a run's "
                          f"checkpoints/step_N/){found}")


def checkpoint_canvas(path: Path) -> int:
    """Canvas side of a checkpoint file: sqrt(seq_len) from config.yaml beside it, else from the arch stored in
    it; 30 for upstream and fork files (every published one is 30x30)."""
    side = path.parent / "config.yaml"
    if side.is_file():
        data = load_yaml(side)
        seq = data.get("seq_len") or (data.get("arch") or {}).get("seq_len")
        if seq:
            return math.isqrt(int(seq))
    obj = _torch_load(path)
    if isinstance(obj, dict) and isinstance(obj.get("arch"), dict) and obj["arch"].get("seq_len"):
        return math.isqrt(int(obj["arch"]["seq_len"]))
    return math.isqrt(FOREIGN_SEQ_LEN)


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True; memory-mapped when the file allows (a 2.4 GB table is then read lazily)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be mmapped: retry plainly, report that error
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one message naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):
            refused, reason = weights_only_refusal(e)
            if refused:  # never suggest weights_only=False: that would run whatever the file holds
                raise CheckpointError(f"{path}: refused: holds Python objects that weights_only loading does not "
                                      f"allow, nothing in it was run (save a plain state_dict instead): {reason}") \
                    from None
            first = reason
        raise CheckpointError(f"{path}: cannot read this checkpoint (truncated, corrupt or not a torch file): "
                              f"{type(e).__name__}: {first}") from None


_INTERP_RE = re.compile(r"^\$\{\.?(?:arch\.)?(\w+)\}$")


def _read_sidecar(path: Path) -> tuple[dict, LoraConfig | None, list[str], bool]:
    """The `arch:` section of an upstream/fork `all_config.yaml` -> (ArchConfig fields, LoRA, ignored keys, is_fork)."""
    try:
        data = load_yaml(path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    section = data.get("arch") or {}
    if not isinstance(section, dict):
        raise CheckpointError(f"{path}: `arch` is not a mapping")
    arch, lora_raw, ignored = {}, {}, []
    for key, value in section.items():
        if isinstance(value, str) and _INTERP_RE.match(value):  # OmegaConf `${.hidden_size}` left unresolved
            value = section.get(_INTERP_RE.match(value).group(1), value)
        if key.startswith("lora_"):
            lora_raw[key] = value
        elif key == "loss" and isinstance(value, dict) and "loss_type" in value:
            arch["loss_type"] = value["loss_type"]
        elif key == "forward_dtype":
            ignored.append(key)  # a runtime choice: ours is "auto" (bf16 on GPU, fp32 on CPU) unless passed
        elif key in ARCH_FIELDS:
            arch[key] = value
        else:
            ignored.append(key)  # name, batch_size, causal, grid_noise_*, ...
    lora = None
    if int(lora_raw.get("lora_rank") or 0) > 0:
        rank = int(lora_raw["lora_rank"])
        alpha = lora_raw.get("lora_alpha")  # absent: the fork's model used its config default, not the rank
        lora = LoraConfig(rank=rank, alpha=float(FORK_LORA_ALPHA if alpha is None else alpha),
                          dropout=float(lora_raw.get("lora_dropout") or 0.0))
    fork_markers = ("halt_max_steps_eval", "puzzle_emb_dropout", "grid_token_dropout")
    is_fork = bool(lora_raw) or any(k in section for k in fork_markers) or "puzzle_emb_reinit_strategy" in data
    return arch, lora, ignored, is_fork


def read_checkpoint(path: str | Path) -> CheckpointContents:
    """Read any supported checkpoint (a file or a folder, see `resolve_checkpoint`) without building a model."""
    path = resolve_checkpoint(path)
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == "trm_core":
        if obj.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: written by a newer trm_core (format_version {obj['format_version']} "
                                  f"> {FORMAT_VERSION}); upgrade trm_core")
        missing = [k for k in ("arch", "model", "kind") if k not in obj]
        if missing:
            raise CheckpointError(f"{path}: trm_core checkpoint without {missing}")
        lora = LoraConfig(**{**obj["lora"], "target": tuple(obj["lora"]["target"])}) if obj.get("lora") else None
        return CheckpointContents(path, "trm_core", obj["kind"], {canonical_key(k): v for k, v in obj["model"].items()},
                                  dict(obj["arch"]), "stored in the checkpoint", obj.get("identifiers_sha256"), lora,
                                  extra=dict(obj.get("extra") or {}))
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise CheckpointError(f"{path}: not a TRM checkpoint (expected a state_dict of tensors or a trm_core "
                              f"checkpoint, found {type(obj).__name__})")
    sd = {canonical_key(k): v for k, v in obj.items()}
    if "inner.embed_tokens.embedding_weight" not in sd:  # infer_arch would refuse it without naming the file
        raise CheckpointError(f"{path}: not a TRM state_dict: no inner.embed_tokens.embedding_weight")
    prefixes = sorted({m.group(1) for k in obj if (m := KEY_PREFIX_RE.match(k))} |
                      ({""} if any(k.startswith("inner.") for k in obj) else set()))
    arch, lora, ignored, is_fork, source = {}, None, [], False, None
    sidecar = path.parent / "all_config.yaml"
    if sidecar.is_file():
        arch, lora, ignored, is_fork = _read_sidecar(sidecar)
        source = str(sidecar)
    has_lora = any(k.endswith((".lora_A", ".lora_B")) for k in sd)
    return CheckpointContents(path, "fork" if (has_lora or is_fork) else "upstream", "full", sd, arch, source,
                              None, lora, prefixes, ignored)


# ----------------------------------------------------------------------------------------------------------
# Settings: from shapes, from the file, from the caller
# ----------------------------------------------------------------------------------------------------------


def _expansion_for(hidden: int, width: int) -> float:
    """An `expansion` giving this SwiGLU width (4.0 when it fits, as upstream; the width rule is many-to-one)."""
    if swiglu_width(hidden, 4.0) == width:
        return 4.0
    return width * 3 / (2 * hidden)


def infer_arch(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The ArchConfig settings that the tensor shapes of a canonical (`inner.*`) state_dict determine."""
    sd = state_dict
    emb = sd.get("inner.embed_tokens.embedding_weight")
    if emb is None or emb.ndim != 2:
        raise CheckpointError("not a TRM state_dict: no inner.embed_tokens.embedding_weight")
    out: dict[str, Any] = {"vocab_size": emb.shape[0], "hidden_size": emb.shape[1]}
    table = sd.get(PUZZLE_TABLE)
    out["puzzle_emb_ndim"] = table.shape[1] if table is not None else 0
    if table is not None:
        out["num_puzzle_identifiers"] = table.shape[0]
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"inner\.L_level\.layers\.(\d+)\.", k))}
    if layers:
        out["L_layers"] = max(layers) + 1
    out["mlp_t"] = any(".mlp_t." in k for k in sd)
    gate_up = sd.get("inner.L_level.layers.0.mlp.gate_up_proj.weight")
    if gate_up is not None:
        out["expansion"] = _expansion_for(out["hidden_size"], gate_up.shape[0] // 2)
    if "inner.embed_pos.embedding_weight" in sd:
        out["pos_encodings"] = "learned"
    return out


def _total_positions(sd: dict[str, torch.Tensor]) -> int | None:
    """prefix + seq_len, when a learned position table or mlp_t's sequence-axis MLP records it."""
    if "inner.embed_pos.embedding_weight" in sd:
        return sd["inner.embed_pos.embedding_weight"].shape[0]
    down = sd.get("inner.L_level.layers.0.mlp_t.down_proj.weight")
    return down.shape[0] if down is not None else None


def _same(key: str, a: Any, b: Any, hidden: int) -> bool:
    if key == "expansion":  # equal if they give the same layer widths
        return swiglu_width(hidden, float(a)) == swiglu_width(hidden, float(b))
    return a == b


def _fix_hint(path: Path, settings: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    flags = " ".join(f"{k}={v}" for k, v in settings.items())
    return f"load_checkpoint({str(path)!r}, {args}) or `--arch {flags}`"


def _missing_message(path: Path, missing: list[str], source: str | None) -> str:
    parts = [f"{k} ({KNOWN_VALUES[k]})" for k in missing]
    example = {"puzzle_emb_len": 16, "L_cycles": 4, "H_cycles": 3, "num_heads": 8, "halt_max_steps": 16,
               "pos_encodings": "none"}
    where = f"neither in the weights nor in {source}" if source else \
        "not in the weights, and there is no all_config.yaml beside the file"
    return (f"{path}: these settings are {where}, and a wrong value would load silently and give garbage: "
            f"{'; '.join(parts)}. Pass them, e.g. for an upstream ARC checkpoint "
            f"{_fix_hint(path, {k: example[k] for k in missing})} (the same for the Trelis fork's published "
            f"step_723914; puzzle_emb_len=1 only for a model trained from scratch with the fork's trm.yaml)")


@dataclass
class ResolvedArch:
    arch: ArchConfig
    lora: LoraConfig | None
    assumed: dict[str, Any]  # foreign defaults we filled in (e.g. seq_len 900), for `trm info`


def resolve_arch(contents: CheckpointContents, arch: dict[str, Any] | None = None,
                 num_puzzle_identifiers: int | None = None) -> ResolvedArch:
    """Combine the caller's settings, the recorded ones and the shapes into one ArchConfig (see module doc)."""
    path, sd = contents.path, contents.state_dict
    caller = dict(arch or {})
    lora_caller = {k: caller.pop(k) for k in LORA_ARCH_KEYS if k in caller}
    unknown = sorted(set(caller) - set(ARCH_FIELDS))
    if unknown:
        raise CheckpointError(f"{path}: unknown arch setting(s) {unknown}; known: "
                              f"{', '.join(ARCH_FIELDS + LORA_ARCH_KEYS)}")
    if "num_puzzle_identifiers" in caller:  # the table size is a resize request, handled by the loader
        caller.pop("num_puzzle_identifiers")
    inferred = infer_arch(sd)
    hidden = inferred["hidden_size"]
    recorded = {k: v for k, v in contents.arch.items() if k in ARCH_FIELDS}
    source = contents.arch_source or "the checkpoint"

    for key, value in recorded.items():
        if key in inferred and not _same(key, value, inferred[key], hidden):
            raise CheckpointError(f"{path}: {source} says {key}={value!r} but the weights have "
                                  f"{key}={inferred[key]!r}; the recorded config does not belong to these weights")
    for key, value in caller.items():
        if key in RUNTIME_SETTINGS:
            continue
        if key in inferred and not _same(key, value, inferred[key], hidden):
            raise CheckpointError(f"{path}: you passed {key}={value!r} but the weights have {key}={inferred[key]!r}")
        if key in recorded and not _same(key, value, recorded[key], hidden):
            raise CheckpointError(f"{path}: you passed {key}={value!r} but {source} records {key}={recorded[key]!r};"
                                  f" drop the argument (a recorded setting is not overridden silently)")

    values = {**recorded, **inferred, **caller}
    assumed: dict[str, Any] = {}
    required = list(REQUIRED_FOREIGN)
    if values.get("mlp_t") and "inner.embed_pos.embedding_weight" not in sd:
        required.append("pos_encodings")  # rope or none: nothing in the weights tells (non-persistent tables)
    missing = [k for k in required if k not in values]
    if missing:
        raise CheckpointError(_missing_message(path, missing, contents.arch_source))
    if "pos_encodings" not in values:
        values["pos_encodings"] = assumed["pos_encodings"] = "rope"

    # seq_len: from learned positions / mlp_t when the weights hold it, else recorded/caller, else 30x30.
    ndim = values.get("puzzle_emb_ndim", 0)
    prefix = values["puzzle_emb_len"] or -(ndim // -values["hidden_size"])
    total = _total_positions(sd)
    if total is not None:
        seq_len = total - prefix
        if "seq_len" in values and values["seq_len"] != seq_len:
            raise CheckpointError(f"{path}: seq_len={values['seq_len']} with puzzle_emb_len={values['puzzle_emb_len']}"
                                  f" needs {values['seq_len'] + prefix} positions; the weights have {total}")
        if seq_len < 1 or math.isqrt(seq_len) ** 2 != seq_len:
            raise CheckpointError(f"{path}: puzzle_emb_len={values['puzzle_emb_len']} leaves {seq_len} of the "
                                  f"{total} positions in the weights for the grid, not a square canvas: wrong "
                                  f"puzzle_emb_len? ({KNOWN_VALUES['puzzle_emb_len']})")
        values["seq_len"] = seq_len
    elif "seq_len" not in values:
        values["seq_len"] = assumed["seq_len"] = FOREIGN_SEQ_LEN

    values["num_puzzle_identifiers"] = num_puzzle_identifiers or inferred.get("num_puzzle_identifiers", 1)
    try:
        cfg = arch_from_dict({k: v for k, v in values.items() if k in ARCH_FIELDS}, source=f"{path} arch")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    return ResolvedArch(cfg, _resolve_lora(contents, lora_caller), assumed)


def _resolve_lora(contents: CheckpointContents, caller: dict[str, Any]) -> LoraConfig | None:
    """The LoRA config for the adapters in the file (None without adapters)."""
    path, sd = contents.path, contents.state_dict
    a_keys = [k for k in sd if k.endswith(".lora_A")]
    if not a_keys:
        if caller.get("lora_rank"):
            raise CheckpointError(f"{path}: holds no LoRA adapters; load it, then call "
                                  f"trm_core.lora.apply_lora(model, LoraConfig(rank=...))")
        return None
    rank = sd[a_keys[0]].shape[0]
    found = {k[: -len(".lora_A")].rsplit(".", 1)[-1] for k in a_keys}
    targets = tuple(t for t in LORA_TARGETS if t in found)
    cfg = contents.lora
    if cfg is None:
        if "lora_alpha" not in caller:
            raise CheckpointError(f"{path}: holds rank-{rank} LoRA adapters but no record of lora_alpha (the output"
                                  f" scale alpha/rank); pass lora_alpha= (the fork's LoRA configs use 16)")
        cfg = LoraConfig(rank=rank, alpha=float(caller["lora_alpha"]),
                         dropout=float(caller.get("lora_dropout") or 0.0), target=targets)
    else:
        for key, value in caller.items():
            have = {"lora_rank": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout}[key]
            if value != have:
                raise CheckpointError(f"{path}: you passed {key}={value!r} but the checkpoint records {have!r}")
        cfg = dataclasses.replace(cfg, target=targets)
    if cfg.rank != rank:
        raise CheckpointError(f"{path}: LoRA rank {cfg.rank} recorded, but the adapters have rank {rank}")
    return cfg


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


def reinit_puzzle_table(table: torch.Tensor, rows: int, strategy: str = "mean", seed: int = 0) -> torch.Tensor:
    """A new (rows, ndim) table from an old one: "mean" = every row the mean row (upstream's resize);
    "normal" = per-dimension N(mean, std) of the old rows (the fork's `puzzle_emb_reinit_strategy: normal`)."""
    old = table.float()
    mean = old.mean(0)
    if strategy == "mean":
        return mean.expand(rows, -1).clone()
    if strategy == "normal":
        std = old.std(0) if old.shape[0] > 1 else torch.zeros_like(mean)
        noise = torch.randn(rows, old.shape[1], generator=torch.Generator().manual_seed(seed))
        return mean + std * noise
    raise CheckpointError(f"puzzle_emb_reinit must be 'mean' or 'normal', got {strategy!r}")


PUZZLE_EMB_STRATEGIES = ("mean", "normal", "keep")


def puzzle_table_mismatch(path: str | Path, rows: int, n_ids: int, ids_source: str) -> str:
    """The message for a checkpoint whose puzzle table does not fit a dataset: both sizes and the fix."""
    return (f"{path}: the checkpoint's puzzle-embedding table has {rows:,} rows but {ids_source} has {n_ids:,} "
            f"puzzle identifiers: the model was trained on another dataset (or on the same tasks built another "
            f"way), so puzzle ids would select the wrong rows and its predictions would be garbage. Fix: use the "
            f"dataset it was trained on, rebuilt byte for byte: `trm build-data` (default --rng-scheme upstream) "
            f"with that run's --subsets, --test-set-name, --num-aug and --seed (README: Reproducing upstream "
            f"numbers); or post-train on this dataset first (trm train load_checkpoint=..., which re-initialises "
            f"the table).")


def count_identifiers(identifiers_path: str | Path) -> int:
    """Entries of an identifiers.json (the number of puzzle ids, `<blank>` included)."""
    with open(identifiers_path) as f:
        return len(json.load(f))


def load_checkpoint(path: str | Path, *, num_puzzle_identifiers: int | None = None,
                    puzzle_emb_reinit: str = "mean", identifiers_path: str | Path | None = None,
                    device: str | torch.device = "cpu", strict: bool = True, **arch: Any) -> TRM:
    """A TRM in eval mode from any supported checkpoint, ready for `trm_core.predict`.

    Args:
        path: a checkpoint file or a folder (see `resolve_checkpoint`).
        num_puzzle_identifiers: size of the puzzle table wanted (e.g. a new dataset's). If it differs from the
            file's, the table is re-initialised by `puzzle_emb_reinit` ("mean" or "normal"), or, with "keep",
            loading is refused (the table's rows are meant to be used as they are). A trunk export is always
            re-initialised from its one mean row (and cannot be kept).
        identifiers_path: the dataset's identifiers.json. Unless the table is re-initialised, the table must
            have one row per entry and, when the checkpoint records the hash of its identifiers.json (ours do),
            the hashes must agree; either mismatch is refused with both sizes and the fix.
        device: where the model goes. strict: every key present and used (else listed in the error).
        **arch: ArchConfig settings by upstream name (`puzzle_emb_len=16`, `L_cycles=4`, ...), plus the fork's
            `lora_rank` / `lora_alpha` / `lora_dropout`; needed only when the file does not record them.
    Raises:
        CheckpointError: unreadable file, missing or contradicting settings, mismatched keys or shapes, a
            puzzle table that does not fit the dataset.
    """
    if puzzle_emb_reinit not in PUZZLE_EMB_STRATEGIES:
        raise CheckpointError(f"puzzle_emb_reinit must be one of {PUZZLE_EMB_STRATEGIES}, got {puzzle_emb_reinit!r}")
    contents = read_checkpoint(path)
    if contents.kind == "adapter":
        raise CheckpointError(f"{contents.path}: an adapter-only file (no trunk): load the base checkpoint, apply "
                              f"LoRA and call trm_core.lora.load_adapter_state_dict(model, sd)")
    sd = dict(contents.state_dict)
    table = sd.get(PUZZLE_TABLE)
    resized = False
    if table is not None:
        rows = num_puzzle_identifiers or table.shape[0]
        if puzzle_emb_reinit == "keep":
            if contents.kind == "trunk":
                raise CheckpointError(f"{contents.path}: a trunk export has no per-puzzle rows to keep; use "
                                      f"puzzle_emb_reinit 'mean' or 'normal'")
            if rows != table.shape[0]:
                raise CheckpointError(puzzle_table_mismatch(contents.path, table.shape[0], rows, "the dataset"))
        elif contents.kind == "trunk" or rows != table.shape[0]:
            sd[PUZZLE_TABLE] = reinit_puzzle_table(table, rows, puzzle_emb_reinit)
            resized = True
    resolved = resolve_arch(contents, arch, sd[PUZZLE_TABLE].shape[0] if table is not None else None)
    if identifiers_path is not None and table is not None and not resized:
        n_ids = count_identifiers(identifiers_path)
        if n_ids != table.shape[0]:
            raise CheckpointError(puzzle_table_mismatch(contents.path, table.shape[0], n_ids, str(identifiers_path)))
    if identifiers_path is not None and contents.identifiers_sha256 and not resized:
        if sha256_file(identifiers_path) != contents.identifiers_sha256:
            raise CheckpointError(f"{contents.path}: {identifiers_path} is not the identifiers file this model was "
                                  f"trained with (its sha256 differs from the recorded one): puzzle ids would select "
                                  f"the wrong rows. Fix: use the dataset the model was trained on (rebuilt with the "
                                  f"same flags, README: Reproducing upstream numbers), or post-train on this one.")

    model = build_model(resolved.arch)
    if resolved.lora is not None:
        apply_lora(model, resolved.lora)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if strict and (missing or unexpected):
        raise CheckpointError(f"{contents.path}: keys do not match the model ({len(missing)} missing: {missing[:10]};"
                              f" {len(unexpected)} unexpected: {unexpected[:10]})")
    for key in set(sd) & set(expected):
        if sd[key].shape != expected[key].shape:
            raise CheckpointError(f"{contents.path}: {key} has shape {tuple(sd[key].shape)} in the file, "
                                  f"{tuple(expected[key].shape)} in the model built from "
                                  f"{_arch_summary(resolved.arch)}")
    if missing or unexpected:
        warnings.warn(f"{contents.path}: loaded non-strictly; missing {missing[:10]}, unexpected {unexpected[:10]}")
    model.load_state_dict(sd, strict=strict)
    return model.to(device).eval()


def _arch_summary(cfg: ArchConfig) -> str:
    keys = ("hidden_size", "num_heads", "L_layers", "expansion", "seq_len", "puzzle_emb_len", "pos_encodings")
    return ", ".join(f"{k}={getattr(cfg, k)}" for k in keys)


# ----------------------------------------------------------------------------------------------------------
# Saving and exporting
# ----------------------------------------------------------------------------------------------------------


def _unwrap(model: torch.nn.Module) -> TRM:
    """The TRM inside torch.compile's wrapper and/or ACTLossHead."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "model", model) if not isinstance(model, TRM) else model
    model = getattr(model, "_orig_mod", model)
    if not isinstance(model, TRM):
        raise TypeError(f"expected a TRM (or a wrapper of one), got {type(model).__name__}")
    return model


def save_checkpoint(path: str | Path, model: torch.nn.Module, *, identifiers_path: str | Path | None = None,
                    lora: LoraConfig | None = None, kind: str = "full", extra: dict | None = None) -> Path:
    """Write our format atomically (see docs/DESIGN.md): arch, identifiers hash and LoRA config beside the weights.

    kind: "full" (every tensor), "trunk" (puzzle table replaced by its mean row: what Kaggle datasets carry) or
    "adapter" (LoRA adapters + trained token embedding only). `extra` must hold plain values (weights_only).
    """
    model = _unwrap(model)
    if kind not in ("full", "trunk", "adapter"):
        raise ValueError(f"save_checkpoint: kind must be full, trunk or adapter, got {kind!r}")
    lora = lora or getattr(model, "lora_config", None)
    arch = to_dict(model.config)
    if kind == "adapter":
        if not lora_layers(model):
            raise ValueError("save_checkpoint(kind='adapter'): the model has no LoRA adapters")
        sd = adapter_state_dict(model)
    else:
        sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if kind == "trunk" and PUZZLE_TABLE in sd:
            sd[PUZZLE_TABLE] = sd[PUZZLE_TABLE].float().mean(0, keepdim=True)
            arch["num_puzzle_identifiers"] = 1
    payload = {
        "format": "trm_core", "format_version": FORMAT_VERSION, "kind": kind, "arch": arch, "model": sd,
        "identifiers_sha256": sha256_file(identifiers_path) if identifiers_path else None,
        "num_puzzle_identifiers": arch["num_puzzle_identifiers"],
        "lora": lora.to_dict() if lora is not None else None,
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, path)


_MODEL_CARD = """# TRM trunk export (trm_core)

A Tiny Recursive Model (arXiv 2510.04871) for ARC-AGI, exported by `trm export` for offline use (e.g. as a
Kaggle dataset): the trunk weights, the architecture, and the **mean** puzzle embedding as a single row. The
per-puzzle embedding table of the source checkpoint ({source_rows} rows) is not included; a new dataset's
puzzles all start from the mean row (upstream's re-initialisation for fine-tuning).

- source: `{source}` ({source_format} format)
- files: `model.pt` (trm_core checkpoint, kind "trunk"), `config.yaml` (architecture)
- parameters: {params:,} trunk parameters{lora}

## Architecture

```yaml
{arch_yaml}```

## Load

```python
import trm_core
model = trm_core.load_checkpoint("{out_name}/model.pt", num_puzzle_identifiers=N)  # N = your dataset's ids
out = trm_core.predict(model, inputs, puzzle_identifiers)
```

`trm info {out_name}/model.pt` shows what the file holds.

## Licence

MIT, as the upstream TinyRecursiveModels code. Check the licence of the data the source weights were trained on.
"""


def export_trunk(src: str | Path, out_dir: str | Path, **arch: Any) -> Path:
    """Write `out_dir/model.pt` (trunk + mean puzzle row), `config.yaml` and a README.md model card.

    `**arch` supplies the settings a foreign `src` does not record (see `load_checkpoint`). Returns model.pt's
    path. For the ARC model this is ~27 MB, against 2.44 GB for a full upstream ARC-AGI-2 checkpoint.
    """
    import yaml

    if "num_puzzle_identifiers" in arch:
        raise CheckpointError("a trunk export holds one mean puzzle row; choose num_puzzle_identifiers when "
                              "loading it: load_checkpoint(export, num_puzzle_identifiers=N)")
    contents = read_checkpoint(src)
    model = load_checkpoint(src, num_puzzle_identifiers=1, **arch)  # the mean row, and every check of a load
    table = contents.state_dict.get(PUZZLE_TABLE)
    out_dir = Path(out_dir)
    extra = {"source": str(contents.path), "source_format": contents.format,
             "source_num_puzzle_identifiers": int(table.shape[0]) if table is not None else 0,
             "source_identifiers_sha256": contents.identifiers_sha256}
    path = save_checkpoint(out_dir / "model.pt", model, kind="trunk", extra=extra)
    lora = getattr(model, "lora_config", None)
    config = {"arch": {**to_dict(model.config), "num_puzzle_identifiers": 1},
              "lora": lora.to_dict() if lora else None}
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    params = sum(p.numel() for p in model.parameters())
    atomic_write_text(out_dir / "README.md", _MODEL_CARD.format(
        source=contents.path.name, source_format=contents.format, source_rows=extra["source_num_puzzle_identifiers"],
        params=params, lora=f", LoRA rank {lora.rank} adapters included (unmerged)" if lora else "",
        arch_yaml=yaml.safe_dump(config["arch"], sort_keys=False), out_name=out_dir.name))
    return path


# ----------------------------------------------------------------------------------------------------------
# Inspection
# ----------------------------------------------------------------------------------------------------------


def checkpoint_info(path: str | Path, **arch: Any) -> dict[str, Any]:
    """What a checkpoint holds, as plain data: format, kind, keys with shapes and dtypes, inferred / recorded /
    missing settings (with `**arch` taken as given by a caller), LoRA, identifiers hash."""
    c = read_checkpoint(path)
    sd = c.state_dict
    inferred = infer_arch(sd) if c.kind != "adapter" else {}
    info: dict[str, Any] = {
        "path": str(c.path), "format": c.format, "kind": c.kind, "file_bytes": c.path.stat().st_size,
        "key_prefixes": c.key_prefixes, "num_tensors": len(sd),
        "num_elements": sum(v.numel() for v in sd.values()),
        "trunk_parameters": sum(v.numel() for k, v in sd.items()
                                if k != PUZZLE_TABLE and not k.endswith(("H_init", "L_init"))),
        "keys": [{"key": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
                 for k, v in sd.items()],
        "inferred_arch": inferred, "recorded_arch": c.arch, "arch_source": c.arch_source,
        "ignored_config_keys": c.ignored_config_keys, "lora": c.lora.to_dict() if c.lora else None,
        "identifiers_sha256": c.identifiers_sha256, "extra": c.extra, "missing_settings": {}, "assumed": {},
        "error": None,
    }
    if c.kind == "adapter":
        return info
    try:
        resolved = resolve_arch(c, arch)
        info["resolved_arch"] = to_dict(resolved.arch)
        info["assumed"] = resolved.assumed
    except CheckpointError as e:
        known = {**c.arch, **inferred, **arch}
        info["missing_settings"] = {k: KNOWN_VALUES[k] for k in REQUIRED_FOREIGN if k not in known}
        info["error"] = str(e)
    return info


def format_info(info: dict[str, Any]) -> str:
    """`checkpoint_info` as text for a terminal."""
    mb = info["file_bytes"] / 1e6
    lines = [f"{info['path']}: {info['format']} checkpoint, kind {info['kind']}, {mb:.1f} MB",
             f"  {info['num_tensors']} tensors, {info['num_elements']:,} elements "
             f"({info['trunk_parameters']:,} outside the puzzle table)"]
    if info["key_prefixes"]:
        lines.append("  key spelling: " + ", ".join(repr(p + "inner.") for p in info["key_prefixes"]))
    width = max((len(k["key"]) for k in info["keys"]), default=0)
    lines.append("  keys:")
    lines += [f"    {k['key']:<{width}}  {str(tuple(k['shape'])):<16} {k['dtype']}" for k in info["keys"]]
    if info["inferred_arch"]:
        lines.append("  from shapes: " + ", ".join(f"{k}={v}" for k, v in info["inferred_arch"].items()))
    if info["arch_source"]:
        recorded = {k: v for k, v in info["recorded_arch"].items() if k not in info["inferred_arch"]}
        lines.append(f"  recorded ({info['arch_source']}): " + ", ".join(f"{k}={v}" for k, v in recorded.items()))
    if info["ignored_config_keys"]:
        lines.append("  ignored config keys: " + ", ".join(info["ignored_config_keys"]))
    if info["assumed"]:
        lines.append("  assumed defaults: " + ", ".join(f"{k}={v}" for k, v in info["assumed"].items()))
    if info["lora"]:
        lines.append("  LoRA: " + ", ".join(f"{k}={v}" for k, v in info["lora"].items()))
    if info["identifiers_sha256"]:
        lines.append(f"  identifiers.json sha256: {info['identifiers_sha256']}")
    lines += [f"  {k}: {v}" for k, v in info["extra"].items() if v is not None]
    if info["missing_settings"]:
        lines.append("  MISSING (pass them to load): " +
                     "; ".join(f"{k} ({v})" for k, v in info["missing_settings"].items()))
    elif info["error"]:
        lines.append(f"  cannot load as is: {info['error']}")
    elif "resolved_arch" in info:
        lines.append("  loads as: " + _arch_summary(ArchConfig(**info["resolved_arch"])))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def parse_arch(items: list[str]) -> dict[str, Any]:
    """`--arch puzzle_emb_len=16 arch.L_cycles=4` -> ArchConfig keywords (an `arch.` prefix is accepted)."""
    parsed = parse_overrides(items, "--arch")
    return {**{k: v for k, v in parsed.items() if k != "arch"}, **parsed.get("arch", {})}


def _run(fn, prog: str) -> int:
    try:
        fn()
    except (ValueError, OSError) as e:  # CheckpointError, ConfigError, bad values: one line, no traceback
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


_ARCH_HELP = ("settings the checkpoint does not record, as key=value (upstream names): puzzle_emb_len=16 "
              "L_cycles=4 H_cycles=3 num_heads=8 halt_max_steps=16 for upstream's ARC runs")


def main_info(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trm info", description="example: trm info checkpoints/arc2/step_723914\n\nShow what a checkpoint "
        "holds: format, key spelling, tensors, settings read from shapes or recorded, and what is missing.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint file, or a folder with model.pt / step_N files")
    parser.add_argument("--json", action="store_true", help="print the information as JSON")
    parser.add_argument("--arch", nargs="+", default=[], metavar="KEY=VALUE", help=_ARCH_HELP)
    args = parser.parse_args(argv)

    def show():
        info = checkpoint_info(args.checkpoint, **parse_arch(args.arch))
        print(json.dumps(info, indent=2, default=str) if args.json else format_info(info))

    return _run(show, "trm info")


def main_export(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trm export", description="example: trm export checkpoints/arc2/step_723914 trm-arc2-trunk "
        "--arch puzzle_emb_len=16 L_cycles=4 H_cycles=3 num_heads=8 halt_max_steps=16\n\nWrite a trunk-only "
        "export (weights + config + mean puzzle embedding, no per-puzzle table; ~27 MB for the ARC model) with "
        "a README model card, ready to upload as a Kaggle or Hugging Face dataset.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="source checkpoint (upstream step_N, fork, or trm_core)")
    parser.add_argument("out_dir", help="output folder (model.pt, config.yaml, README.md)")
    parser.add_argument("--arch", nargs="+", default=[], metavar="KEY=VALUE", help=_ARCH_HELP)
    args = parser.parse_args(argv)

    def export():
        path = export_trunk(args.src, args.out_dir, **parse_arch(args.arch))
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), config.yaml and README.md")

    return _run(export, "trm export")


__all__ = ["CheckpointContents", "CheckpointError", "canonical_key", "checkpoint_canvas", "checkpoint_info",
           "checkpoint_steps", "count_identifiers", "export_trunk", "format_info", "infer_arch", "latest_checkpoint",
           "load_checkpoint", "main_export", "main_info", "parse_arch", "puzzle_table_mismatch", "read_checkpoint",
           "reinit_puzzle_table", "resolve_arch", "resolve_checkpoint", "save_checkpoint", "sha256_file"]
