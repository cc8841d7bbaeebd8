#!/usr/bin/env python
"""Kaggle staging: one folder per Kaggle dataset (`weights`, `wheels`, `repo`) and the kernel, and their upload.

    .venv/bin/python scripts/kaggle_staging.py all --user ME --export-dir runs/x/export --wheelhouse wheels/wheelhouse
    scripts/package_kaggle.sh all --user ME ...            # the same, with a usage header

Repo tooling (it needs the repo, git, papermill and the kaggle CLI), kept beside the script that calls it, outside
the package: it calls the package's functions (`trm_core.checkpoint.export_trunk`, the wheelhouse in
`wheels/wheelhouse.py`), never its command line. Each dataset folder gets its `dataset-metadata.json`; the `kernel`
folder holds the notebook rendered by papermill `--prepare-only` plus `kernel-metadata.json`. The kaggle CLI is
only ever run in a subprocess (`import kaggle` authenticates at import time), and only with `--upload`.
Credentials are checked for presence, never read into output. Every staged folder is scanned for credentials
(`trm_core.secrets_scan`) before anything could upload it; an existing `--out` folder holding files this tool did
not stage is refused (nothing is deleted) unless `--force`.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "wheels"))  # the wheelhouse tooling beside wheels/build_wheelhouse.sh

from wheelhouse import (add_wheelhouse_args, build_kwargs, build_wheelhouse, run_captured,  # noqa: E402
                        verify_wheelhouse, write_json)


# ----------------------------------------------------------------------------------------------------------
# Kaggle staging
# ----------------------------------------------------------------------------------------------------------

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")  # 3-50 chars (docs/datasets_metadata.md)
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
TARGETS = ("weights", "wheels", "repo", "notebook")
# The only files taken from an export folder (`trm export` writes the first three).
EXPORT_FILES = ("model.pt", "config.yaml", "README.md", "hub_source.json")
LICENCE_NOTE = ("Code and weights: MIT (TRM, SamsungSAILMontreal/TinyRecursiveModels; Kaggle has no MIT licence "
                "entry, hence 'other'). Training data: ARC-AGI-1/2 Apache-2.0, ConceptARC MIT.")


@dataclass
class KaggleNames:
    user: str
    competition: str = "arc-prize-2025"  # the slug changes every year: a parameter, never hard-coded elsewhere
    weights: str = "trm-core-weights"
    wheels: str = "trm-core-wheels"
    repo: str = "trm-core-repo"
    kernel: str = "trm-arc-submission"
    input_root: str = "/kaggle/input"

    def __post_init__(self) -> None:
        if not USER_RE.match(self.user):
            raise ValueError(f"Kaggle user {self.user!r} is not a valid user name")
        for what in ("competition", "weights", "wheels", "repo", "kernel"):
            if not SLUG_RE.match(getattr(self, what)):
                raise ValueError(f"{what} slug {getattr(self, what)!r}: 3-50 chars of a-z, 0-9 and '-'")

    def id(self, slug: str) -> str:
        return f"{self.user}/{slug}"

    def mount(self, slug: str) -> str:
        """Where Kaggle mounts a dataset or competition input inside the kernel."""
        return f"{self.input_root}/{slug}"


def dataset_metadata(names: KaggleNames, slug: str, title: str, subtitle: str, description: str,
                     licence: str = "other") -> dict:
    """A `dataset-metadata.json` body; checks Kaggle's limits (title 6-50, subtitle 20-80 chars)."""
    if not 6 <= len(title) <= 50:
        raise ValueError(f"dataset title {title!r} must be 6-50 characters")
    if not 20 <= len(subtitle) <= 80:
        raise ValueError(f"dataset subtitle {subtitle!r} must be 20-80 characters")
    return {"title": title, "id": names.id(slug), "subtitle": subtitle, "description": description,
            "licenses": [{"name": licence}]}


STAGING_MARKER = ".trm-kaggle-staging"  # in the --out folder: its weights/wheels/repo/kernel are ours to replace


def claim_staging_folder(out: Path, *, force: bool = False) -> Path:
    """Make `out` a staging folder, refusing an existing one that holds anything this tool did not stage.

    Nothing is ever deleted unasked: a non-empty `out` without the marker file is refused unless `force`, and
    even then only the target subfolders (weights, wheels, repo, kernel) are replaced, never other files.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and not (out / STAGING_MARKER).is_file():
        theirs = sorted(p.name for p in out.iterdir())
        if theirs and not force:
            shown = ", ".join(theirs[:5]) + (f" and {len(theirs) - 5} more" if len(theirs) > 5 else "")
            raise ValueError(f"--out {out}: the folder exists and holds files this script did not stage ({shown}); "
                             "nothing was deleted. Use a new or empty folder, or --force to replace only its "
                             "weights/, wheels/, repo/ and kernel/ subfolders")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / STAGING_MARKER).write_text("Staged by scripts/kaggle_staging.py (scripts/package_kaggle.sh); its "
                                          "weights/, wheels/, repo/ and kernel/ subfolders are replaced on the next "
                                          "run.\n")
    except OSError as e:
        from trm_core.utils import OutputPathError, _why_not_writable

        raise OutputPathError(e.errno, f"--out {out}: cannot write there: {_why_not_writable(out, e)}") from None
    return out


def _fresh(folder: Path) -> Path:
    """An empty target subfolder of a staging folder (claimed first: see `claim_staging_folder`)."""
    claim_staging_folder(folder.parent)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def check_staged(folder: Path, target: str) -> Path:
    """Refuse (SecretFoundError, naming each file and the kind of token) a staged folder that holds credentials:
    what is staged is what `kaggle datasets create/version` and `kernels push` would upload."""
    from trm_core.secrets_scan import refuse_if_secrets

    refuse_if_secrets(folder, action=f"Kaggle {target} staging refused (nothing uploaded)")
    return folder


def _run_export(checkpoint: Path, dest: Path, arch: Sequence[str]) -> None:
    """The trunk-only export of `checkpoint` (`trm_core.checkpoint.export_trunk`; `arch`: `trm export`'s KEY=VALUE)."""
    from trm_core.checkpoint import export_trunk, parse_arch

    export_trunk(checkpoint, dest, **parse_arch(list(arch)))


def stage_weights(out: Path, names: KaggleNames, *, export_dir: Path | None = None, checkpoint: Path | None = None,
                  arch: Sequence[str] = ()) -> Path:
    """The weights dataset: the trunk-only export (model.pt + config.yaml + README.md model card)."""
    if (export_dir is None) == (checkpoint is None):
        raise ValueError("weights: give exactly one of --export-dir DIR or --checkpoint PATH")
    folder = _fresh(out / "weights")
    if checkpoint is not None:
        with tempfile.TemporaryDirectory(prefix="trm-export-") as tmp:
            _run_export(Path(checkpoint), Path(tmp) / "export", arch)
            _copy_export(Path(tmp) / "export", folder)
    else:
        _copy_export(Path(export_dir), folder)
    size = (folder / "model.pt").stat().st_size
    write_json(folder / "dataset-metadata.json", dataset_metadata(
        names, names.weights, "TRM core weights",
        "Trunk-only TRM export for ARC-AGI-2, with its config and model card",
        f"Trunk-only export of a Tiny Recursive Model (model.pt, {size / 1e6:.1f} MB: weights, arch config and the "
        "mean puzzle embedding; no per-puzzle table), config.yaml (arch) and README.md (model card). "
        f"Load with trm_core.load_checkpoint('{names.mount(names.weights)}/model.pt'). {LICENCE_NOTE}"))
    return check_staged(folder, "weights")


def _copy_export(src: Path, folder: Path) -> None:
    missing = [f for f in EXPORT_FILES[:3] if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{src} is not a trm export folder: missing {', '.join(missing)} (run `trm export`)")
    for f in EXPORT_FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, folder / f)


def stage_wheels(out: Path, names: KaggleNames, *, wheelhouse: Path | None = None, log=print, **build_kw) -> Path:
    """The wheels dataset: a verified copy of `wheelhouse`, or a fresh build when none is given."""
    folder = _fresh(out / "wheels")
    if wheelhouse is None:
        build_wheelhouse(folder, log=log, **build_kw)
    else:
        for name in verify_wheelhouse(wheelhouse):
            shutil.copy2(Path(wheelhouse) / name, folder / name)
        for extra in ("manifest.json", "SHA256SUMS"):
            shutil.copy2(Path(wheelhouse) / extra, folder / extra)
    wheels = sorted(p.name for p in folder.glob("*.whl"))
    if not any(w.startswith("trm_core-") for w in wheels):
        raise FileNotFoundError(f"no trm_core wheel in {wheelhouse or folder}")
    write_json(folder / "dataset-metadata.json", dataset_metadata(
        names, names.wheels, "TRM core offline wheels",
        "Offline wheelhouse for trm_core on Kaggle (no torch: the image has it)",
        f"Install offline with: pip install --no-index --find-links {names.mount(names.wheels)} trm_core . "
        f"Wheels: {', '.join(wheels)}. manifest.json and SHA256SUMS list versions, tags and hashes. "
        "Third-party wheels keep their own licences. " + LICENCE_NOTE))
    return check_staged(folder, "wheels")


def stage_repo(out: Path, names: KaggleNames, *, repo_dir: Path = REPO_ROOT, ref: str = "HEAD") -> Path:
    """The repo dataset: `git archive REF`, unpacked (only committed files: no .venv, runs or data/built)."""
    rev = run_captured(["git", "-C", str(repo_dir), "rev-parse", "--verify", f"{ref}^{{commit}}"])
    if rev.returncode != 0:
        raise RuntimeError(f"repo: {repo_dir} has no commit {ref!r} to archive (commit first)")
    commit = rev.stdout.strip()
    folder = _fresh(out / "repo")
    archive = subprocess.run(["git", "-C", str(repo_dir), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(archive)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(folder, filter="data")
            else:  # Python < 3.10.12: git archive members are plain files and folders
                tar.extractall(folder)
    write_json(folder / "dataset-metadata.json", dataset_metadata(
        names, names.repo, "TRM core source",
        "Source of trm_core (git archive) for offline use on Kaggle",
        f"git archive of trm_core at commit {commit}: library, configs and notebooks. "
        f"Install with pip install --no-index --find-links {names.mount(names.wheels)} trm_core, or put "
        f"{names.mount(names.repo)} on sys.path. {LICENCE_NOTE}"))
    return check_staged(folder, "repo")


def notebook_parameters(names: KaggleNames, extra: Mapping[str, object] = ()) -> dict:
    """What the Kaggle notebook reads: the mounted inputs and the output folder (plus `--param` overrides)."""
    params = {"data_dir": names.mount(names.competition), "weights": names.mount(names.weights),
              "wheels_dir": names.mount(names.wheels), "repo_dir": names.mount(names.repo),
              "output_dir": "/kaggle/working"}
    params.update(dict(extra))
    return params


def stage_notebook(out: Path, names: KaggleNames, *, notebook: Path, params: Mapping[str, object] = (),
                   title: str = "TRM ARC submission", accelerator: str | None = None,
                   pin_image: str | None = "original", log=print) -> Path:
    """Render `notebook` with papermill `--prepare-only` (parameters injected, nothing run) and write
    `kernel-metadata.json` (GPU on, internet off, the three datasets and the competition as sources)."""
    import papermill

    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook: {notebook} does not exist yet (it is rendered from its jupytext source "
                                "kaggle_notebooks/trm_submission.py with `jupytext --to ipynb`)")
    if not 5 <= len(title) <= 50:
        raise ValueError(f"kernel title {title!r} must be 5-50 characters")
    folder = _fresh(out / "kernel")
    declared = papermill.inspect_notebook(str(notebook))
    wanted = notebook_parameters(names, params)
    unknown = sorted(set(wanted) - set(declared))
    if unknown:
        log(f"notebook: {notebook.name} declares no parameter(s) {', '.join(unknown)}: not injected")
    dest = folder / notebook.name
    papermill.execute_notebook(str(notebook), str(dest), prepare_only=True, log_output=False, progress_bar=False,
                               parameters={k: v for k, v in wanted.items() if k in declared})
    meta = {"id": names.id(names.kernel), "title": title, "code_file": dest.name, "language": "python",
            "kernel_type": "notebook", "is_private": True, "enable_gpu": True, "enable_tpu": False,
            "enable_internet": False,
            "dataset_sources": [names.id(s) for s in (names.weights, names.wheels, names.repo)],
            "competition_sources": [names.competition], "kernel_sources": [], "model_sources": []}
    if accelerator:
        # Unverified id for 4x L4 (docs list NvidiaL4 / NvidiaL4X1; a third-party guide says NvidiaL4x4): choose it
        # once in the Kaggle UI and read it back with `kaggle kernels pull -k USER/SLUG -m`.
        meta["machine_shape"] = accelerator
    if pin_image:
        meta["docker_image_pinning_type"] = pin_image  # "original" keeps the image (python/torch ABI) of the first run
    write_json(folder / "kernel-metadata.json", meta)
    return check_staged(folder, "kernel")


def kaggle_commands(target: str, folder: Path, *, create: bool, message: str,
                    accelerator: str | None = None) -> list[str]:
    """The kaggle CLI call that uploads one staged folder. `-r zip` keeps sub-folders (the default skips them)."""
    if target == "notebook":
        cmd = ["kaggle", "kernels", "push", "-p", str(folder)]
        return cmd + (["--accelerator", accelerator] if accelerator else [])
    if create:
        return ["kaggle", "datasets", "create", "-p", str(folder), "-r", "zip"]
    return ["kaggle", "datasets", "version", "-p", str(folder), "-m", message, "-r", "zip"]


def check_kaggle_credentials(environ: Mapping[str, str], home: Path) -> str:
    """Which credential source the kaggle CLI will use; raises if there is none or a token file is world-readable.

    Only presence and file modes are looked at: no value is read, returned or printed.
    """
    if environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if environ.get("KAGGLE_USERNAME") and environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    config_dir = Path(environ.get("KAGGLE_CONFIG_DIR") or home / ".kaggle")
    for name in ("access_token", "kaggle.json"):
        path = config_dir / name
        if path.is_file():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise PermissionError(f"{path} has mode {mode:o}; the key must be private: chmod 600 {path}")
            return str(path)
    raise PermissionError("no Kaggle credentials: set KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, or "
                          f"put kaggle.json in {config_dir} (chmod 600)")


def redact(text: str, secrets: Sequence[str]) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def run_kaggle_cli(cmd: Sequence[str], secrets: Sequence[str], log=print) -> None:
    """Run one kaggle CLI command in a subprocess; its output is shown with any credential value masked."""
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError("the kaggle CLI is not on PATH: pip install kaggle six")
    res = run_captured(cmd)
    output = redact((res.stdout + res.stderr).strip(), secrets)
    if output:
        log(output)
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {res.returncode})")


def _git_short(repo_dir: Path) -> str:
    res = run_captured(["git", "-C", str(repo_dir), "rev-parse", "--short", "HEAD"])
    return res.stdout.strip() if res.returncode == 0 else "uncommitted"


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    ks = argparse.ArgumentParser(prog="scripts/kaggle_staging.py", description=__doc__.split("\n\n")[0])
    ks.add_argument("target", choices=(*TARGETS, "all"))
    ks.add_argument("--user", help="Kaggle user that owns the datasets (default: $KAGGLE_USERNAME)")
    ks.add_argument("--out", type=Path, default=Path("staging/kaggle"))
    ks.add_argument("--competition", default="arc-prize-2025", help="competition slug (changes every year)")
    ks.add_argument("--export-dir", type=Path, help="a `trm export` folder for the weights dataset")
    ks.add_argument("--checkpoint", type=Path, help="a checkpoint to export (trunk only) for the weights dataset")
    ks.add_argument("--arch", action="append", default=[], metavar="KEY=VALUE", help="arch override for the export")
    ks.add_argument("--wheelhouse", type=Path, help="a built wheelhouse (default: build one into the staging folder)")
    ks.add_argument("--repo-dir", type=Path, default=REPO_ROOT)
    ks.add_argument("--ref", default="HEAD", help="git revision archived for the repo dataset")
    ks.add_argument("--notebook", type=Path, help="default: REPO/kaggle_notebooks/trm_submission.ipynb")
    ks.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="extra notebook parameter (YAML value), e.g. budget_minutes=690 or mode=submit")
    ks.add_argument("--accelerator", help="kernel accelerator id, e.g. NvidiaL4x4 for 4x L4 (unverified id)")
    ks.add_argument("--slug-prefix", default="trm-core", help="dataset slugs are PREFIX-weights/-wheels/-repo")
    ks.add_argument("--kernel-slug", default="trm-arc-submission")
    ks.add_argument("--message", help="version message for `kaggle datasets version`")
    mode = ks.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="stage and print the kaggle commands (the default)")
    mode.add_argument("--upload", action="store_true", help="stage, then run the kaggle commands (needs credentials)")
    ks.add_argument("--create", action="store_true", help="with --upload: first upload (datasets create)")
    ks.add_argument("--force", action="store_true",
                    help="stage into an existing --out that holds other files (only its weights/, wheels/, repo/ "
                         "and kernel/ subfolders are replaced)")
    add_wheelhouse_args(ks)
    args = ks.parse_args(argv)
    try:
        return _kaggle_stage(args, build_kwargs(args))
    except (ValueError, RuntimeError, OSError) as e:  # SecretFoundError (a ValueError) included: one line
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1


def _kaggle_stage(args: argparse.Namespace, build_kw: dict) -> int:
    user = args.user or os.environ.get("KAGGLE_USERNAME")
    if not user:
        raise ValueError("no Kaggle user: pass --user USER (or set KAGGLE_USERNAME)")
    p = args.slug_prefix
    names = KaggleNames(user=user, competition=args.competition, weights=f"{p}-weights", wheels=f"{p}-wheels",
                        repo=f"{p}-repo", kernel=args.kernel_slug)
    secrets: list[str] = []
    if args.upload:
        source = check_kaggle_credentials(os.environ, Path.home())
        print(f"kaggle credentials: {source}")
        secrets = [os.environ.get(k, "") for k in ("KAGGLE_API_TOKEN", "KAGGLE_KEY")]
    from trm_core.config import parse_overrides

    params = parse_overrides(args.param, "--param")

    out: Path = claim_staging_folder(args.out, force=args.force)
    targets = TARGETS if args.target == "all" else (args.target,)
    staged: dict[str, Path] = {}
    for target in targets:
        if target == "weights":
            staged[target] = stage_weights(out, names, export_dir=args.export_dir, checkpoint=args.checkpoint,
                                           arch=args.arch)
        elif target == "wheels":
            staged[target] = stage_wheels(out, names, wheelhouse=args.wheelhouse, project_dir=args.repo_dir,
                                          **build_kw)
        elif target == "repo":
            staged[target] = stage_repo(out, names, repo_dir=args.repo_dir, ref=args.ref)
        else:
            notebook = args.notebook or args.repo_dir / "kaggle_notebooks" / "trm_submission.ipynb"
            staged[target] = stage_notebook(out, names, notebook=notebook, params=params,
                                            accelerator=args.accelerator)
        print(f"staged {target}: {staged[target]}")
    if "notebook" in staged and not args.accelerator:
        print("note: no --accelerator: Kaggle gives the kernel its default GPU. For 4x L4 pick it in the UI once "
              "(or pass --accelerator; the 4x L4 id is unverified) and check with `kaggle kernels pull -m`.")

    message = args.message or f"trm_core {_git_short(args.repo_dir)}"
    commands = [kaggle_commands(t, f, create=args.create, message=message, accelerator=args.accelerator)
                for t, f in staged.items()]
    if not args.upload:
        print("dry run: kaggle not called. Upload with --upload (add --create the first time), i.e.:")
        for t, f in staged.items():
            if t != "notebook":
                print("  first time:  " + shlex.join(kaggle_commands(t, f, create=True, message=message)))
                print("  afterwards:  " + shlex.join(kaggle_commands(t, f, create=False, message=message)))
            else:
                print("  " + shlex.join(kaggle_commands(t, f, create=False, message=message,
                                                        accelerator=args.accelerator)))
        return 0
    for cmd in commands:
        print("+ " + shlex.join(cmd))
        run_kaggle_cli(cmd, secrets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
