"""Typed configuration: the TRM architecture config, YAML loading and dotted overrides.

One loader and one validator for every config in the project (architecture, training, Kaggle runs):

- configs are plain `@dataclass`es; `from_dict(Cls, data, source)` checks every key and type and raises
  `ConfigError` naming the key and the file it came from;
- `apply_overrides(data, ["arch.L_cycles=4", "+run_name=x", 'data_paths="[a,b]"'])` applies the dotted
  overrides the upstream seeds type (Hydra syntax, without Hydra): a leading `+` is accepted and ignored,
  values are parsed as YAML (with `1e-4` read as a float, as Hydra does).

`ArchConfig` keeps upstream's field names so upstream `all_config.yaml` files and command lines map 1:1.
`KaggleRunConfig` is the Kaggle recipe's one tree: each field, declared once with its help (`setting`), is a
`trm kaggle` flag (`add_config_arguments`), a notebook parameter and a preset key; its training settings are
dotted overrides of `trm train`'s config, checked by the same loader.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trm_core.budget import HIDDEN_RERUN_FACTOR


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and where it came from."""


@dataclass
class ArchConfig:
    """The TRM architecture (upstream `TinyRecursiveReasoningModel_ACTV1Config` field names).

    Shape settings can be read back from a state_dict; the "shape-free" ones below the marker cannot, which is
    why our checkpoints store this whole object beside the weights.
    """

    # --- shapes (recoverable from weights) -----------------------------------------------------------------
    hidden_size: int = 512
    num_heads: int = 8
    expansion: float = 4.0  # SwiGLU width = multiple_of_256(round(expansion * hidden * 2/3)) -> 1536 for 512
    L_layers: int = 2
    H_layers: int = 0  # ignored by TRM (one shared L_level network); accepted because upstream configs carry it
    vocab_size: int = 12  # PAD 0, EOS 1, colours 2..11
    seq_len: int = 900  # canvas**2; 900 = 30x30 for every published checkpoint
    num_puzzle_identifiers: int = 1
    puzzle_emb_ndim: int = 512  # 0 disables the puzzle embedding
    pos_encodings: str = "rope"  # "rope" | "learned" | "none"
    mlp_t: bool = False  # MLP-mixer over the sequence instead of attention (upstream's Sudoku variant)
    # --- shape-free (NOT recoverable from weights; upstream README ARC runs: 16 / 4, Trelis fork: 1 / 4) ---
    puzzle_emb_len: int = 16  # prefix positions; 0 = ceil(puzzle_emb_ndim / hidden_size)
    H_cycles: int = 3
    L_cycles: int = 4
    halt_max_steps: int = 16
    halt_max_steps_eval: int | None = None  # None = halt_max_steps (upstream always runs 16 steps at eval)
    halt_exploration_prob: float = 0.1
    no_ACT_continue: bool = True
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # "auto" = bfloat16 on CUDA, float32 on CPU (bf16 matmuls are ~9x slower on CPU); or an explicit dtype name.
    forward_dtype: str = "auto"
    # "sdpa" = scaled_dot_product_attention only (upstream's path, for parity); "auto" = flash-attn when installed
    # (CUDA, bf16/fp16), else SDPA; "flash" = flash-attn or an error. Changes no weight.
    attn_backend: str = "auto"
    puzzle_emb_dropout: float = 0.0  # fork: drop a row's whole puzzle embedding (training only)
    grid_token_dropout: float = 0.0  # fork: dropout on token embeddings (training only)
    # --- loss ---------------------------------------------------------------------------------------------
    loss_type: str = "stablemax_cross_entropy"  # or "softmax_cross_entropy"
    loss_dtype: str = "float32"  # "float64" reproduces upstream bit-for-bit; fp32 is ample for 12 classes

    def __post_init__(self) -> None:
        check_arch(self)

    @property
    def prefix_len(self) -> int:
        """Number of puzzle-embedding prefix positions in front of the grid."""
        if self.puzzle_emb_len == 0:
            return -(self.puzzle_emb_ndim // -self.hidden_size)
        return self.puzzle_emb_len

    @property
    def eval_steps(self) -> int:
        return self.halt_max_steps_eval or self.halt_max_steps


# Settings that do not change any tensor shape: a foreign checkpoint cannot tell us these.
SHAPE_FREE_SETTINGS = ("puzzle_emb_len", "H_cycles", "L_cycles", "halt_max_steps")


def check_arch(cfg: ArchConfig) -> None:
    """Validate value ranges (types are checked by `from_dict`)."""
    positive = ("hidden_size", "num_heads", "L_layers", "vocab_size", "seq_len", "num_puzzle_identifiers",
                "H_cycles", "L_cycles", "halt_max_steps")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"arch.{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.hidden_size % cfg.num_heads:
        raise ConfigError(f"arch.hidden_size ({cfg.hidden_size}) must be divisible by arch.num_heads ({cfg.num_heads})")
    if cfg.puzzle_emb_ndim < 0 or cfg.puzzle_emb_len < 0:
        raise ConfigError("arch.puzzle_emb_ndim and arch.puzzle_emb_len must be >= 0")
    if cfg.puzzle_emb_ndim > cfg.prefix_len * cfg.hidden_size:
        raise ConfigError(f"arch.puzzle_emb_ndim ({cfg.puzzle_emb_ndim}) does not fit in puzzle_emb_len "
                          f"({cfg.puzzle_emb_len}) x hidden_size ({cfg.hidden_size})")
    if cfg.pos_encodings not in ("rope", "learned", "none"):
        raise ConfigError(f"arch.pos_encodings must be rope, learned or none, got {cfg.pos_encodings!r}")
    if cfg.loss_type not in ("stablemax_cross_entropy", "softmax_cross_entropy"):
        raise ConfigError(f"arch.loss_type must be stablemax_cross_entropy or softmax_cross_entropy, got {cfg.loss_type!r}")
    if cfg.loss_dtype not in ("float32", "float64"):
        raise ConfigError(f"arch.loss_dtype must be float32 or float64, got {cfg.loss_dtype!r}")
    if cfg.attn_backend not in ("auto", "sdpa", "flash"):
        raise ConfigError(f"arch.attn_backend must be auto, sdpa or flash, got {cfg.attn_backend!r}")
    if cfg.forward_dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"arch.forward_dtype must be auto, float32, bfloat16 or float16, got {cfg.forward_dtype!r}")
    if cfg.halt_max_steps_eval is not None and cfg.halt_max_steps_eval < 1:
        raise ConfigError(f"arch.halt_max_steps_eval must be >= 1 or null, got {cfg.halt_max_steps_eval}")
    if not 0.0 <= cfg.halt_exploration_prob <= 1.0:
        raise ConfigError(f"arch.halt_exploration_prob must be in [0, 1], got {cfg.halt_exploration_prob}")


# ----------------------------------------------------------------------------------------------------------
# Generic dataclass <-> dict with type checking
# ----------------------------------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        return [_coerce(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type, data: dict, source: str = "config") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types with the key's full name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        close = {k: [n for n in names if n.lower() == k.lower() or n.replace("_", "") == k.replace("_", "")]
                 for k in unknown}
        hint = "; ".join(f"did you mean {close[k][0]!r} for {k!r}?" for k in unknown if close[k])
        raise ConfigError(f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}"
                          f"{' (' + hint + ')' if hint else ''}; known keys: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{source}: {k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def to_dict(obj: Any) -> dict:
    """A dataclass as a plain dict of YAML-safe values."""
    return dataclasses.asdict(obj)


def arch_from_dict(data: dict, source: str = "arch") -> ArchConfig:
    return from_dict(ArchConfig, data, source)


# ----------------------------------------------------------------------------------------------------------
# YAML files and overrides
# ----------------------------------------------------------------------------------------------------------

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """Parse an override value like Hydra: YAML, except that `1e-4` is a float (PyYAML reads it as a string)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        inner = text[1:-1]
        if inner.startswith("[") or inner.startswith("{"):
            return parse_value(inner)
        return inner
    if _FLOAT_RE.match(text) and not re.match(r"^[-+]?\d+$", text):
        return float(text)
    if text.startswith("[") and text.endswith("]"):
        body = text[1:-1].strip()
        if not body:
            return []
        try:
            loaded = yaml.safe_load(text)
            if isinstance(loaded, list):
                return [parse_value(str(v)) if isinstance(v, str) else v for v in loaded]
        except yaml.YAMLError:
            pass
        return [parse_value(p) for p in body.split(",")]
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # not YAML, or an int past Python's digit limit: kept as the text given
        return text


def apply_overrides(data: dict, overrides: list[str], source: str = "command line") -> dict:
    """Apply `key=value` / `a.b=value` / `+key=value` overrides to a nested dict (in place, also returned)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+")
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"{source}: override {item!r} has an empty key")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: override {item!r}: {part!r} is not a section")
        node[parts[-1]] = parse_value(value)
    return data


def parse_overrides(items: list[str], source: str = "command line") -> dict:
    """`["arch.L_cycles=4", "lr=1e-4"]` -> `{"arch": {"L_cycles": 4}, "lr": 0.0001}`: the one KEY=VALUE parser
    behind every flag that takes such pairs (`--arch`, `--set`, `--param`, `--train`)."""
    return apply_overrides({}, list(items), source)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with an error naming the file."""
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    except (RecursionError, ValueError, OSError, UnicodeDecodeError) as e:  # deep nesting, a 5,000-digit int, a folder
        reason = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        raise ConfigError(f"{path}: not a usable config file ({' '.join(str(reason).split())[:200]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def save_yaml(data: Any, path: str | Path) -> None:
    """Write `data` (a dict or dataclass) as YAML atomically."""
    from trm_core.utils import atomic_write_text

    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


# ----------------------------------------------------------------------------------------------------------
# Settings with help: one field -> one command-line flag, one notebook parameter
# ----------------------------------------------------------------------------------------------------------

def setting(default: Any, help: str, parse: str | None = None) -> Any:
    """A dataclass field with its default and one line of help (shown by `--help` and the notebook's comment);
    `parse="views"`: the text `all` also means None (a count of views, `trm_core.rescore.views_arg`)."""
    meta = {"help": help, **({"parse": parse} if parse else {})}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_value(cls: type, name: str, value: Any) -> Any:
    """`value` as field `name` of `cls` takes it from text: `all` is None for a `parse="views"` field."""
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}.get(name, {})
    if meta.get("parse") == "views" and isinstance(value, str) and value.strip().lower() == "all":
        return None
    return value


def add_config_arguments(parser: Any, cls: type) -> None:
    """One flag per field of `cls`: `--name-with-dashes VALUE` (`none` is None where a field may be None),
    `--x/--no-x` for booleans, repeatable `--name VALUE` for lists. Only the flags given reach `flags_to_dict`."""
    import argparse

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag, tp = "--" + f.name.replace("_", "-"), hints[f.name]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif typing.get_origin(tp) is list or tp is list:
            parser.add_argument(flag, action="append", default=argparse.SUPPRESS, metavar="VALUE", help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar="VALUE", help=help_text)


def flags_to_dict(args: Any, cls: type) -> dict:
    """The flags given (the namespace of `add_config_arguments(parser, cls)`) as field values: text for string
    fields, an override value (`parse_value`) for the others, `none` for None where allowed; `from_dict` checks
    every type."""
    hints = typing.get_type_hints(cls)
    out = {}
    for key, value in vars(args).items():
        if isinstance(value, str):
            optional = type(None) in typing.get_args(hints[key])
            if optional and value.strip().lower() in ("none", "null"):
                value = None
            elif not (hints[key] is str or set(typing.get_args(hints[key])) == {str, type(None)}):
                value = parse_value(value)
        out[key] = field_value(cls, key, value)
    return out


# ----------------------------------------------------------------------------------------------------------
# The Kaggle recipe's config (trm_core.kaggle): one tree for `trm kaggle`, the notebook and the presets
# ----------------------------------------------------------------------------------------------------------

@dataclass
class KaggleRunConfig:
    """Every setting of a Kaggle run: `trm kaggle`'s flags, the notebook's parameters, the presets' keys."""

    data_dir: str = setting("/kaggle/input/arc-prize-2025", "competition folder; its arc-agi_test_challenges.json "
                            "is found below it (the slug changes every year)")
    challenges_file: str | None = setting(None, "a challenges file or a task list (data/proof_tasks.json) to "
                                          "use instead of searching data_dir")
    solutions_file: str | None = setting(None, "known solutions: the run scores itself and trm report shows them")
    weights: str = setting("/kaggle/input/trm-core-weights", "trunk export folder, checkpoint or run folder; "
                           "scratch: a tiny TRM from scratch")
    output_dir: str = setting("/kaggle/working", "submission.json, kaggle_log.jsonl and eval/ (trm report reads it)")
    work_dir: str | None = setting(None, "each run builds and trains in a new folder under this; None: "
                                   "TMPDIR/trm_work, outside the kernel's output")
    budget_minutes: float = setting(690.0, "wall clock from the start to the final submission.json")
    commit_budget_minutes: float = setting(10.0, "budget of a Kaggle commit run (Save and Run All, where "
                                           "KAGGLE_IS_COMPETITION_RERUN is unset): every phase, briefly")
    mode: str = setting("emb_then_full", "lora | full | emb_then_full | emb_only | none (no training)")
    steps: int | None = setting(None, "cap on optimizer steps; None: as many as the budget allows")
    batch_size: int = setting(384, "global batch over all processes; lowered to what one epoch holds")
    train: list[str] = setting([], "dotted overrides of the mode's training config, as trm train takes them "
                               "(lr, ema, lora.rank, arch.hidden_size, ...)")
    train_aug: int = setting(1000, "augmented versions per task to train on (fewer if the build runs short)")
    colour_permutation: bool = setting(True, "False: the 8 dihedral transforms only (at most 8 versions)")
    dihedral_first: bool = setting(False, "the plain dihedral versions first, then random colour permutations")
    train_translation: bool = setting(True, "random placement of the training pairs on the canvas")
    vote_aug: int = setting(512, "augmented versions per test input that vote (fewer if time runs short)")
    # Choosing the attempts (trm_core.rescore). Each extra costs inference rows, which the plan counts; when time
    # is short the runner drops them in this order: rescoring views, noisy passes, pooled checkpoints, then
    # voting augmentations.
    select: str = setting("mean_logprob", "how the two attempts are chosen: mean_logprob (measured best) | votes "
                          "| poe | votes_then_logprob | hybrid (trm_core/rescore.py)")
    select_candidates: int = setting(64, "K: candidates per test input a likelihood rule re-ranks")
    select_views: int | None = setting(None, "M: augmented views each candidate is scored under, one inference row "
                                       "each; None or all: every view that voted", parse="views")
    noise_scale: float = setting(0.0, "latent noise std of the extra noisy passes")
    noise_samples: int = setting(0, "noisy inference passes per row that also vote (0: off); each costs a full "
                                 "voting pass")
    pool_checkpoints: int = setting(1, "pool the votes of the adaptation run's last N checkpoints (1: the final "
                                    "one)")
    eval_batch_size: int = setting(256, "rows per inference forward per device")
    warmup_steps: int = setting(20, "training steps timed before planning (the first third is dropped)")
    hidden_rerun_factor: float = setting(HIDDEN_RERUN_FACTOR, "planned inference time x this: the hidden "
                                         "rerun is about a third slower than the placeholder file")
    safety_margin: float = setting(0.05, "fraction of the budget the plan leaves free at the end")
    seed: int = setting(0, "augmentation and training seed")
    device: str = setting("auto", "auto | cpu | cuda")
    nproc: int | None = setting(None, "training processes and inference devices; None: visible GPUs (1 on CPU)")
    canvas_size: int | None = setting(None, "canvas side for scratch weights (a trunk carries its own); None: 30")
    progress: bool = setting(True, "progress bars of the build and the trainer")
    heartbeat_minutes: float = setting(3.0, "a status line this often while a phase works (0: none)")


KAGGLE_PRESETS = Path(__file__).resolve().parent / "configs" / "kaggle"


def load_preset(name: str | Path) -> dict:
    """A preset of the Kaggle recipe (`trm_core/configs/kaggle/NAME.yaml`, or a YAML path) as config fields,
    checked against `KaggleRunConfig`."""
    path = Path(name) if Path(name).suffix else KAGGLE_PRESETS / f"{name}.yaml"
    data = load_yaml(path)
    from_dict(KaggleRunConfig, data, str(path))
    return data


def config_from(parameters: Any) -> KaggleRunConfig:
    """The Kaggle recipe's config from a namespace holding its fields by name (the notebook's globals after
    papermill injected its parameters); other names are ignored, every value is type-checked."""
    names = {f.name for f in dataclasses.fields(KaggleRunConfig)}
    return from_dict(KaggleRunConfig, {k: v for k, v in parameters.items() if k in names}, "notebook parameters")


def swiglu_width(hidden: int, expansion: float) -> int:
    """Upstream's SwiGLU sizing: round(expansion * hidden * 2/3) rounded up to a multiple of 256."""
    inter = round(expansion * hidden * 2 / 3)
    return int(math.ceil(inter / 256) * 256)


__all__ = ["ArchConfig", "ConfigError", "KAGGLE_PRESETS", "KaggleRunConfig", "SHAPE_FREE_SETTINGS",
           "add_config_arguments", "apply_overrides", "arch_from_dict", "check_arch", "config_from", "field_value",
           "flags_to_dict", "from_dict", "load_preset", "load_yaml", "parse_overrides", "parse_value", "save_yaml",
           "setting", "swiglu_width", "to_dict"]
