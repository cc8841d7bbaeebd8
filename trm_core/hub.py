"""Hugging Face hub: fetch published TRM checkpoints, push a run's chosen files with a model card.

    trm hub list                                              the known published checkpoints
    trm hub fetch aa2 --local-dir pretrained                  a known one, by key (files + its shape-free settings)
    trm hub fetch Trelis/TRM-ARC-AGI-II step_723914 all_config.yaml --local-dir pretrained
    trm hub push runs/my_run me/trm-my-run --dry-run          what would be uploaded, and the card
    trm hub push runs/my_run me/trm-my-run --allow 'export/*' --public

`huggingface_hub` is imported only inside `fetch` / `push`. Offline (`HF_HUB_OFFLINE=1`) `fetch` reads the hub's own
cache layout (`HF_HUB_CACHE` or `cache_dir`: `models--OWNER--NAME/{refs,snapshots,blobs}`), which is how it is tested
and how a Kaggle dataset holding a copied cache would be read. Tokens come from huggingface_hub's usual places
(`HF_TOKEN`, the cached login); this module never reads, prints or uploads them.

`push` decides by what a file is and holds, not by its name: only what a model repo needs (weights that load with
weights_only=True, configs, identifiers, the card, metrics, curves; see `classify`), never hidden files, caches,
logs or other files, and resume state (optimizer, ACT carries, RNG) only with `include_resume_state=True`.
Every file that would leave, the generated card included, is scanned for credentials
(`trm_core.secrets_scan`); one hit refuses the whole push, naming the file and the kind of token.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from trm_core.utils import prepare_output_dir, sha256_file


@dataclass(frozen=True)
class KnownCheckpoint:
    """A published checkpoint and the settings its weights cannot tell us (None = not known)."""

    repo_id: str
    files: tuple[str, ...]  # what to fetch: the weights file(s) first
    description: str
    puzzle_emb_len: int | None = None
    L_cycles: int | None = None
    H_cycles: int | None = None
    notes: str = ""
    other_steps: tuple[str, ...] = field(default=())

    def arch_overrides(self) -> list[str]:
        """`--arch` overrides for the known shape-free settings."""
        return [f"{k}={v}" for k in ("puzzle_emb_len", "H_cycles", "L_cycles") if (v := getattr(self, k)) is not None]


# From ../shared/reference/trelis-fork.md sections 6-8 and kaggle-ecosystem.md section 2. Upstream's README ARC runs use
# puzzle_emb_len 16 and L_cycles 4; the Trelis fork changed its defaults to 1 / 4 on 2025-10-26, so a fork-trained
# checkpoint is not safe to assume either way. H_cycles is 3 in every ARC config we know of.
KNOWN_CHECKPOINTS: dict[str, KnownCheckpoint] = {
    "aa2": KnownCheckpoint(
        "Trelis/TRM-ARC-AGI-II", ("step_723914", "all_config.yaml"),
        "TRM-paper replication on ARC-AGI-2 (1,280 tasks, ~48 h on 4xH100); the Trelis 6.67% Kaggle model",
        puzzle_emb_len=16, L_cycles=4, H_cycles=3,
        notes="puzzle_emb_len 16 from the fork README's load commands, L_cycles 4 from the paper; all_config.yaml "
              "in the repo records the run's own settings: check it after fetching."),
    "aa1": KnownCheckpoint(
        "Sanjin2024/TinyRecursiveModels-ARC-AGI-1", ("step_155718",),
        "Xin Gao's ARC-AGI-1 replication (used by Trelis for post-training tests)",
        puzzle_emb_len=16,
        notes="puzzle_emb_len 16 per the Trelis README; L_cycles not recorded (upstream's ARC command uses 4)."),
    "aa2-all-200k": KnownCheckpoint(
        "Trelis/TRM-ARC-AGI-II-all-200k", ("step_769740",),
        "Trelis 8-GPU pretraining on all data, 200k epochs ('expanded 200k': 4.25% on Kaggle)",
        notes="trained with the fork (default puzzle_emb_len 1); settings not recorded here: read its "
              "all_config.yaml if the repo has one.",
        other_steps=("step_307898", "step_384872", "step_615792")),
    "aa2-hard-1M": KnownCheckpoint(
        "Trelis/TRM-ARC-AGI-II-hard-1M", ("step_591850",),
        "Trelis 8-GPU pretraining on hard data, 1M epochs (1.27% on Kaggle)",
        notes="settings not recorded here (fork default puzzle_emb_len 1).",
        other_steps=("step_280350", "step_358225")),
    "arcprize-v1": KnownCheckpoint(
        "arcprize/trm_arc_prize_verification", ("arc_v1_public/step_518071",),
        "ARC Prize's TRM verification run on ARC-AGI-1 public data",
        notes="settings not recorded here."),
}

DEFAULT_ALLOW = ("*",)  # names only narrow the choice; what a file is and holds decides (see `classify`)
RESUME_KEYS = frozenset({"optimizers", "optimizer", "carries", "torch_rng", "numpy_rng", "python_rng", "cuda_rng"})
RESUME_NAMES = ("train_state*", "carry_rank*", "*optim*", "*optimizer*")
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
METRIC_NAMES = ("metrics.json", "metrics.jsonl", "*metrics*.json", "*metrics*.jsonl", "per_task.csv")
CURVE_SUFFIXES = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff"}
MAX_TEXT_BYTES = 64 * 1024 * 1024  # a config, card or metrics file larger than this is not one


def _torch_kind(path: Path) -> tuple[str | None, str]:
    """("weights" | "resume" | None, why) for a torch file, read with weights_only=True (nothing in it runs)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be mmapped: retry plainly
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - not loadable safely: never published
            from trm_core.utils import weights_only_refusal

            refused, reason = weights_only_refusal(e)
            return None, (f"refused: holds Python objects weights_only loading does not allow ({reason})" if refused
                          else f"not a readable torch file ({reason})")
    if isinstance(obj, dict) and RESUME_KEYS & set(obj):
        return "resume", "resume state (optimizer / ACT carries / RNG states)"
    if isinstance(obj, dict) and any(isinstance(v, torch.Tensor) or isinstance(v, dict) for v in obj.values()):
        return "weights", "weights"
    return None, "a torch file without weights"


def _safetensors_ok(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= 100_000_000:
                return False
            header = json.loads(f.read(n))
        return isinstance(header, dict)
    except (OSError, ValueError):
        return False


def _text_kind(path: Path, kind: str) -> tuple[str | None, str]:
    """A config/metrics/card text file: small, UTF-8, and (YAML/JSON) parsing to what the kind holds."""
    if path.stat().st_size > MAX_TEXT_BYTES:
        return None, f"larger than {MAX_TEXT_BYTES // 2**20} MB: not a {kind} file"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, f"not UTF-8 text: not a {kind} file"
    name = path.name.lower()
    try:
        if name.endswith((".yaml", ".yml")):
            import yaml

            ok = isinstance(yaml.safe_load(text), dict)
        elif name.endswith(".jsonl"):
            from trm_core.jsonio import loads

            ok = all(isinstance(loads(line, file=path), dict) for line in text.splitlines() if line.strip())
        elif name.endswith(".json"):
            from trm_core.jsonio import loads

            ok = isinstance(loads(text, file=path), (dict, list))
        else:
            ok = True
    except Exception:  # noqa: BLE001 - yaml and JSON errors alike: the file is not what its name claims
        ok = False
    return (kind, kind) if ok else (None, f"does not parse as a {kind} file")


def classify(run_dir: Path, rel: str) -> tuple[str | None, str]:
    """What a file is, from its name *and* its content: (kind, why). Kinds a model repo needs: "weights",
    "config", "identifiers", "card", "metrics", "curves"; "resume" is training state (uploaded only on request);
    None is anything else (never uploaded: credentials, caches, logs, hidden files, code...)."""
    path = run_dir / rel
    parts = rel.split("/")
    name = parts[-1].lower()
    if any(p.startswith(".") for p in parts):
        return None, "hidden file or folder"
    if any(p in ("wandb", "__pycache__") for p in parts[:-1]):
        return None, "a tool's cache or log folder"
    suffix = Path(name).suffix
    if suffix in WEIGHT_SUFFIXES or re.fullmatch(r"step_\d+", name):
        kind, why = _torch_kind(path)
        if kind == "weights" and any(fnmatch.fnmatch(name, p) for p in RESUME_NAMES):
            return "resume", "resume state (by its name)"
        return kind, why
    if suffix == ".safetensors":
        return ("weights", "weights") if _safetensors_ok(path) else (None, "not a safetensors file")
    if suffix in (".yaml", ".yml", ".json") and "config" in name:
        return _text_kind(path, "config")
    if name == "identifiers.json":
        return _text_kind(path, "identifiers")
    if any(fnmatch.fnmatch(name, p) for p in METRIC_NAMES):
        return _text_kind(path, "metrics")
    if suffix == ".md":
        return _text_kind(path, "card")
    if suffix in CURVE_SUFFIXES:
        try:
            with open(path, "rb") as f:
                magic = f.read(8)
        except OSError:
            return None, "unreadable"
        return ("curves", "curves") if magic.startswith(CURVE_SUFFIXES[suffix]) else (None, "not an image")
    return None, "not a model-repo file (weights, config, card, metrics, curves)"


def select_files(run_dir: str | Path, allow: Sequence[str] = DEFAULT_ALLOW, *, include_resume_state: bool = False,
                 include_optimizer: bool | None = None, skipped: dict[str, str] | None = None) -> list[str]:
    """Relative posix paths under `run_dir` that match `allow` and are, by content, files a model repo needs
    (`classify`); resume state only with `include_resume_state`. Sorted. `skipped` receives the others' reasons.
    Links are never followed (a link could point anywhere on the machine)."""
    run_dir = Path(run_dir)
    include = include_resume_state or bool(include_optimizer)
    chosen = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_symlink() or not path.is_file() or not any(fnmatch.fnmatch(rel, p) for p in allow):
            continue
        kind, why = classify(run_dir, rel)
        if kind == "resume" and not include:
            why = "resume state (--include-resume-state to upload it)"
            kind = None
        if kind is None:
            if skipped is not None:
                skipped[rel] = why
            continue
        chosen.append(rel)
    return chosen


def _read_arch(run_dir: Path) -> dict:
    """The arch settings recorded beside the weights (`config.yaml` from `trm export`/`trm train`), if any."""
    import yaml

    for name in ("config.yaml", "all_config.yaml"):
        path = run_dir / name
        if path.is_file():
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except Exception:  # noqa: BLE001 - an unreadable config leaves the card's settings unknown
                return {}
            arch = data.get("arch", data) if isinstance(data, dict) else None  # a run config nests it under arch
            return arch if isinstance(arch, dict) else {}
    return {}


def make_model_card(repo_id: str, files: dict[str, tuple[int, str]], *, arch: dict | None = None,
                    base: str | None = None, metrics: dict | None = None, notes: str = "") -> str:
    """A README.md model card: front matter, what the files are, the shape-free settings and how to load them.

    `files` maps each uploaded path to (size in bytes, sha256).
    """
    arch = arch or {}
    lines = ["---", "license: mit", "library_name: trm_core", "tags:", "- arc-agi", "- tiny-recursive-model",
             "- trm", "---", "", f"# {repo_id.split('/')[-1]}", "",
             "A Tiny Recursive Model (TRM, arXiv:2510.04871; architecture and parameter names of "
             "SamsungSAILMontreal/TinyRecursiveModels) for ARC-AGI, uploaded with trm_core.", ""]
    if base:
        lines += [f"Fine-tuned from `{base}`.", ""]
    if notes:
        lines += [notes, ""]
    shape_free = ("puzzle_emb_len", "H_cycles", "L_cycles", "halt_max_steps")
    if arch:
        lines += ["## Architecture", "", "| setting | value |", "| --- | --- |"]
        keys = [k for k in ("hidden_size", "num_heads", "L_layers", "expansion", "seq_len", "puzzle_emb_ndim",
                            "pos_encodings", *shape_free, "forward_dtype") if k in arch]
        lines += [f"| {k}{' (shape-free)' if k in shape_free else ''} | {arch[k]} |" for k in keys]
        lines += ["", "Shape-free settings are not recoverable from the weights: load with exactly these values."]
        overrides = " ".join(f"--arch {k}={arch[k]}" for k in shape_free if k in arch)
    else:
        lines += ["## Architecture", "", "Not recorded beside these files: `puzzle_emb_len` and `L_cycles` must be "
                  "known from the training run before loading (see trm_core.hub.KNOWN_CHECKPOINTS)."]
        overrides = ""
    lines += [""]
    if metrics:
        lines += ["## Results", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()] + [""]
    lines += ["## Files", "", "| file | size | sha256 |", "| --- | ---: | --- |"]
    lines += [f"| `{f}` | {size / 1e6:.2f} MB | `{digest[:16]}...` |" for f, (size, digest) in sorted(files.items())]
    weights = next((f for f in sorted(files) if f.endswith(".pt") or Path(f).name.startswith("step_")), None)
    lines += ["", "## Use", "", "```bash", "pip install trm_core huggingface_hub",
              f"trm hub fetch {repo_id} {weights or 'FILE'} --local-dir weights"]
    if weights:
        lines += [f"trm info weights/{weights}", f"trm export weights/{weights} export {overrides}".rstrip()]
    lines += ["```", "", "Licence: MIT (TRM code). Training data: ARC-AGI-1/2 are Apache-2.0, ConceptARC is MIT.", ""]
    return "\n".join(lines)


def fetch(repo_id: str, files: Sequence[str], local_dir: str | Path, revision: str | None = None, *,
          cache_dir: str | Path | None = None, token: str | bool | None = None) -> list[Path]:
    """Download `files` of `repo_id` into `local_dir` and return their paths.

    Files go through the hub cache (`hf_hub_download`), then are hard-linked (copied across file systems) into
    `local_dir`, so an offline run (`HF_HUB_OFFLINE=1`) finds them in a cache folder copied from elsewhere.
    `local_dir/hub_source.json` records repo, revision and sha256 of what was fetched.
    """
    from huggingface_hub import hf_hub_download

    if not files:
        raise ValueError("fetch: name at least one file (e.g. step_723914 all_config.yaml)")
    local_dir = prepare_output_dir(local_dir)  # OutputPathError names the folder and the reason
    fetched, record = [], {}
    for name in files:
        try:
            cached = Path(hf_hub_download(repo_id, name, revision=revision, cache_dir=cache_dir, token=token))
        except Exception as e:  # huggingface_hub's errors differ across versions; all of them mean "not fetched"
            raise FileNotFoundError(f"cannot fetch {name} from {repo_id}@{revision or 'main'} (offline runs read "
                                    f"only the hub cache: HF_HUB_CACHE or --cache-dir): {e}") from e
        dest = local_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.unlink()
        try:
            os.link(cached.resolve(), dest)
        except OSError:
            shutil.copyfile(cached, dest)
        fetched.append(dest)
        record[name] = {"sha256": sha256_file(dest), "size": dest.stat().st_size}
    source = {"repo_id": repo_id, "revision": revision or "main", "files": record}
    known = next((k for k in KNOWN_CHECKPOINTS.values() if k.repo_id == repo_id), None)
    if known:
        source["arch_overrides"] = known.arch_overrides()
        source["notes"] = known.notes
    (local_dir / "hub_source.json").write_text(json.dumps(source, indent=2) + "\n")
    return fetched


def push(run_dir: str | Path, repo_id: str, *, allow: Sequence[str] = DEFAULT_ALLOW,
         include_resume_state: bool = False, include_optimizer: bool | None = None, private: bool = True,
         dry_run: bool = False, base: str | None = None, metrics: dict | None = None,
         commit_message: str | None = None, api=None) -> dict:
    """Upload the model files of `run_dir` (see `select_files`) plus a generated README.md model card.

    Returns the plan: `{"repo_id", "files": [...], "skipped": {file: reason}, "card": str, "private": bool,
    "uploaded": bool}`. Raises SecretFoundError (a ValueError) when a file to upload holds a credential, dry run
    or not. With `dry_run=True` nothing is imported or sent. `api` defaults to `huggingface_hub.HfApi()` (tests
    pass a local stand-in with the same `create_repo` / `upload_folder` methods). `include_optimizer` is the
    old name of `include_resume_state`.
    """
    from trm_core.secrets_scan import Finding, SecretFoundError, refuse_if_secrets, scan_bytes

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"push: {run_dir} is not a folder")
    skipped: dict[str, str] = {}
    files = [f for f in select_files(run_dir, allow, include_resume_state=include_resume_state,
                                     include_optimizer=include_optimizer, skipped=skipped) if f != "README.md"]
    if not files:
        raise ValueError(f"push: no model file in {run_dir} (weights, config, card, metrics, curves) matches "
                         f"{list(allow)}")
    refuse_if_secrets(run_dir, files, action=f"push to {repo_id} refused")
    info = {f: ((run_dir / f).stat().st_size, sha256_file(run_dir / f)) for f in files}
    card = make_model_card(repo_id, info, arch=_read_arch(run_dir), base=base, metrics=metrics)
    kind = scan_bytes(card.encode())
    if kind:
        raise SecretFoundError([Finding("README.md (the generated card)", kind)], f"push to {repo_id} refused")
    plan = {"repo_id": repo_id, "files": files, "skipped": skipped, "card": card, "private": private,
            "uploaded": False}
    if dry_run:
        return plan
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="trm-push-") as tmp:
        # Stage exactly the chosen files (hard links) and the card, and scan the stage once more, so the upload
        # cannot pick up anything else.
        stage = Path(tmp)
        for f in files:
            (stage / f).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(run_dir / f, stage / f)
            except OSError:
                shutil.copyfile(run_dir / f, stage / f)
        (stage / "README.md").write_text(card)
        refuse_if_secrets(stage, action=f"push to {repo_id} refused")
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(stage), allow_patterns=[*files, "README.md"],
                          commit_message=commit_message or f"trm_core: upload {len(files)} files from {run_dir.name}")
    plan["uploaded"] = True
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    """`trm hub list|fetch|push` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="trm hub", description="Hugging Face weights in and out")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="known published checkpoints")
    f = sub.add_parser("fetch", help="download checkpoint files (works offline from the hub cache)")
    f.add_argument("repo", help="OWNER/NAME, or a key of the known list (trm hub list)")
    f.add_argument("files", nargs="*", help="files to fetch (default for a known key: its weights and config)")
    f.add_argument("--local-dir", type=Path, required=True)
    f.add_argument("--revision")
    f.add_argument("--cache-dir", type=Path, help="hub cache (default: HF_HUB_CACHE / ~/.cache/huggingface/hub)")
    p = sub.add_parser("push", help="upload a run's allowlisted files and a model card")
    p.add_argument("run_dir", type=Path)
    p.add_argument("repo_id")
    p.add_argument("--allow", action="append",
                   help="only files matching this glob, repeatable (default: every model file; what a file is "
                        "and holds decides, never its name alone)")
    p.add_argument("--include-resume-state", "--include-optimizer", dest="include_resume_state",
                   action="store_true", help="also upload resume state (optimizer, ACT carries, RNG states)")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--base", help="the checkpoint this run was fine-tuned from, for the card")
    p.add_argument("--dry-run", action="store_true", help="print the file list and the card; upload nothing")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            for key, k in KNOWN_CHECKPOINTS.items():
                over = " ".join(f"--arch {o}" for o in k.arch_overrides()) or "(settings unknown)"
                print(f"{key:<13} {k.repo_id} {' '.join(k.files)}\n{'':<13} {k.description}\n{'':<13} {over}")
            return 0
        if args.command == "fetch":
            known = KNOWN_CHECKPOINTS.get(args.repo)
            repo_id = known.repo_id if known else args.repo
            files = args.files or (list(known.files) if known else [])
            paths = fetch(repo_id, files, args.local_dir, args.revision, cache_dir=args.cache_dir)
            for path in paths:
                print(path)
            known = known or next((k for k in KNOWN_CHECKPOINTS.values() if k.repo_id == repo_id), None)
            if known:
                print(f"load with: {' '.join('--arch ' + o for o in known.arch_overrides()) or '(unknown settings)'}"
                      f"  ({known.notes})")
            return 0
        plan = push(args.run_dir, args.repo_id, allow=args.allow or DEFAULT_ALLOW,
                    include_resume_state=args.include_resume_state, private=not args.public, dry_run=args.dry_run,
                    base=args.base)
        verb = "would upload" if args.dry_run else "uploaded"
        print(f"{verb} to {plan['repo_id']} ({'private' if plan['private'] else 'public'}):")
        for name in [*plan["files"], "README.md (generated model card)"]:
            print(f"  {name}")
        if plan["skipped"]:
            print(f"not uploaded ({len(plan['skipped'])}):")
            for name, why in plan["skipped"].items():
                print(f"  {name}: {why}")
        if args.dry_run:
            print("\n" + plan["card"])
        return 0
    except (OSError, ValueError) as e:  # SecretFoundError included: one line naming the files, exit 2
        print(f"trm hub: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
