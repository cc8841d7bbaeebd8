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

`push` uploads only files that match the allowlist, and never (whatever the allowlist) token/credential files,
caches, `.git` or, unless `include_optimizer=True`, optimizer / training state.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from trm_core.utils import sha256_file


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

DEFAULT_ALLOW = ("*.pt", "*.safetensors", "*.yaml", "*.yml", "*.json", "*.md", "step_*")
# Never uploaded, whatever the allowlist says (fnmatch: `*` also matches `/`).
DENY = ("*token*", "*secret*", "*credential*", "*password*", "*.netrc", "*kaggle.json", "*.env", ".env",
        ".cache/*", "*/.cache/*", ".git/*", "*/.git/*", "*__pycache__*", "wandb/*", "*/wandb/*")
OPTIMIZER_STATE = ("*train_state*", "*optim*", "*optimizer*")


def _is_denied(rel: str, include_optimizer: bool) -> bool:
    deny = DENY if include_optimizer else DENY + OPTIMIZER_STATE
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(Path(rel).name, p) for p in deny)


def select_files(run_dir: str | Path, allow: Sequence[str] = DEFAULT_ALLOW, *,
                 include_optimizer: bool = False) -> list[str]:
    """Relative posix paths under `run_dir` that match `allow` and none of the deny patterns, sorted."""
    run_dir = Path(run_dir)
    chosen = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir).as_posix()
        if path.is_file() and not path.is_symlink() and any(fnmatch.fnmatch(rel, p) for p in allow) \
                and not _is_denied(rel, include_optimizer):
            chosen.append(rel)
    return chosen



def _read_arch(run_dir: Path) -> dict:
    """The arch settings recorded beside the weights (`config.yaml` from `trm export`/`trm train`), if any."""
    import yaml

    for name in ("config.yaml", "all_config.yaml"):
        path = run_dir / name
        if path.is_file():
            data = yaml.safe_load(path.read_text()) or {}
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
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
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


def push(run_dir: str | Path, repo_id: str, *, allow: Sequence[str] = DEFAULT_ALLOW, include_optimizer: bool = False,
         private: bool = True, dry_run: bool = False, base: str | None = None, metrics: dict | None = None,
         commit_message: str | None = None, api=None) -> dict:
    """Upload the allowlisted files of `run_dir` plus a generated README.md model card to `repo_id`.

    Returns the plan: `{"repo_id", "files": [...], "card": str, "private": bool, "uploaded": bool}`. With
    `dry_run=True` nothing is imported or sent. `api` defaults to `huggingface_hub.HfApi()` (tests pass a local
    stand-in with the same `create_repo` / `upload_folder` methods).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"push: {run_dir} is not a folder")
    files = [f for f in select_files(run_dir, allow, include_optimizer=include_optimizer) if f != "README.md"]
    if not files:
        raise ValueError(f"push: no file in {run_dir} matches {list(allow)}")
    info = {f: ((run_dir / f).stat().st_size, sha256_file(run_dir / f)) for f in files}
    card = make_model_card(repo_id, info, arch=_read_arch(run_dir), base=base, metrics=metrics)
    plan = {"repo_id": repo_id, "files": files, "card": card, "private": private, "uploaded": False}
    if dry_run:
        return plan
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    with tempfile.TemporaryDirectory(prefix="trm-push-") as tmp:
        # Stage exactly the chosen files (hard links) and the card, so the upload cannot pick up anything else.
        stage = Path(tmp)
        for f in files:
            (stage / f).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(run_dir / f, stage / f)
            except OSError:
                shutil.copyfile(run_dir / f, stage / f)
        (stage / "README.md").write_text(card)
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
    p.add_argument("--allow", action="append", help=f"glob to upload, repeatable (default: {' '.join(DEFAULT_ALLOW)})")
    p.add_argument("--include-optimizer", action="store_true", help="also upload optimizer / training state")
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
                    include_optimizer=args.include_optimizer, private=not args.public, dry_run=args.dry_run,
                    base=args.base)
        verb = "would upload" if args.dry_run else "uploaded"
        print(f"{verb} to {plan['repo_id']} ({'private' if plan['private'] else 'public'}):")
        for name in [*plan["files"], "README.md (generated model card)"]:
            print(f"  {name}")
        if args.dry_run:
            print("\n" + plan["card"])
        return 0
    except (OSError, ValueError) as e:
        print(f"trm hub: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
