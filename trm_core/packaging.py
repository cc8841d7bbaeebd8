"""Offline packaging for Kaggle: the wheelhouse and the staged Kaggle datasets and kernel.

    python -m trm_core.packaging wheelhouse --out wheels/wheelhouse --python 3.11 --python 3.12
    python -m trm_core.packaging kaggle-stage all --user ME --export-dir runs/x/export --wheelhouse wheels/wheelhouse

The shell entry points `wheels/build_wheelhouse.sh` and `scripts/package_kaggle.sh` only call these.

Wheelhouse: the `trm_core` wheel plus every runtime dependency the Kaggle image lacks, for each target CPython
(manylinux x86_64). Binary wheels come from `pip download --only-binary=:all: --platform --python-version
--implementation --abi --no-deps`, one requirement at a time, so that nothing the image already has (torch above
all, see `wheels/kaggle-preinstalled.txt`) is ever pulled in as a dependency; the dependency walk reads each
wheel's own `Requires-Dist`. Sdist-only dependencies are built with `pip wheel` and must come out pure Python.
`manifest.json` and `SHA256SUMS` record name, version, tags, sha256 and size of every file.

Kaggle staging: one folder per Kaggle dataset (`weights`, `wheels`, `repo`) with its `dataset-metadata.json`, and a
`kernel` folder with the notebook rendered by papermill `--prepare-only` plus `kernel-metadata.json`. The kaggle
CLI is only ever run in a subprocess (`import kaggle` authenticates at import time), and only with `--upload`.
Credentials are checked for presence, never read into output. Every staged folder is scanned for credentials
(`trm_core.secrets_scan`) before anything could upload it; an existing `--out` folder holding files this tool did
not stage is refused (nothing is deleted) unless `--force`.
"""

from __future__ import annotations

import argparse
import email.parser
import fnmatch
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from trm_core.utils import sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PREINSTALLED = REPO_ROOT / "wheels" / "kaggle-preinstalled.txt"
# Shipped by the Kaggle image with its CUDA build; a wheel of ours must never shadow them, whatever the list says.
NEVER_SHIP = ("torch", "torchvision", "torchaudio", "triton", "nvidia-*")
# pip expands a manylinux_2_28 platform to every older manylinux tag (2_17 = manylinux2014 included). Every
# Colab-based Kaggle image is Ubuntu 22.04 (glibc 2.35), and numpy >= 2.3 only ships manylinux_2_28 wheels.
MANYLINUX = ("manylinux_2_28_x86_64", "manylinux2014_x86_64")


# ----------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------

def normalize(name: str) -> str:
    """PEP 503 project name: `PyYAML` and `pyyaml`, `huggingface_hub` and `huggingface-hub` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()



def read_name_list(path: Path) -> list[str]:
    """One project name (or glob such as `nvidia-*`) per line; `#` starts a comment."""
    names = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(normalize(line))
    return names


def matches_any(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(normalize(name), p) for p in patterns)


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), text=True, capture_output=True, **kw)


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


# ----------------------------------------------------------------------------------------------------------
# Wheelhouse
# ----------------------------------------------------------------------------------------------------------

def wheel_metadata(path: Path) -> email.message.Message:
    """The METADATA of a wheel (name, version, Requires-Dist)."""
    with zipfile.ZipFile(path) as zf:
        meta = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(meta) != 1:
            raise ValueError(f"{path.name}: expected one .dist-info/METADATA, found {len(meta)}")
        return email.parser.Parser().parsestr(zf.read(meta[0]).decode())


def target_environment(python: str) -> dict[str, str]:
    """PEP 508 marker environment of Kaggle's CPython `python` ("3.12") on Linux x86_64."""
    return {"python_version": python, "python_full_version": f"{python}.0", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
            "platform_machine": "x86_64", "os_name": "posix", "implementation_version": f"{python}.0"}


def _pip_download_binary(req: str, python: str, dest: Path) -> subprocess.CompletedProcess:
    tag = "cp" + python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", python, "--implementation", "cp", "--abi", tag]
    for plat in MANYLINUX:
        cmd += ["--platform", plat]
    return _run(cmd + [req])


def _pip_build_from_sdist(req: str, dest: Path) -> subprocess.CompletedProcess:
    """Download the sdist of `req` and build it into a wheel with `pip wheel` (only pure Python is accepted)."""
    sdists = dest / "sdist"
    got = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--dest", str(sdists), req])
    if got.returncode != 0:
        return got
    (sdist,) = list(sdists.iterdir())
    return _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dest), str(sdist)])


@dataclass
class WheelEntry:
    file: str
    name: str
    version: str
    tags: list[str]
    sha256: str
    size: int
    source: str  # project | binary | sdist-build | gpu-extra
    targets: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, path: Path, source: str) -> "WheelEntry":
        from packaging.utils import parse_wheel_filename

        name, version, _, tags = parse_wheel_filename(path.name)
        return cls(file=path.name, name=str(name), version=str(version), tags=sorted(str(t) for t in tags),
                   sha256=sha256_file(path), size=path.stat().st_size, source=source)


def project_files(project_dir: Path) -> list[str]:
    """Files git would commit (tracked + untracked, not ignored): no .venv, runs, data/built or build/ leftovers."""
    out = _run(["git", "-C", str(project_dir), "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
    if out.returncode != 0:
        raise RuntimeError(f"git ls-files failed in {project_dir}: {_tail(out.stderr)}")
    return sorted({p for p in out.stdout.split("\0") if p and (project_dir / p).is_file()})


def build_project_wheel(project_dir: Path, out: Path) -> Path:
    """`pip wheel --no-deps` of a clean copy of the project (a stale in-tree `build/` can't leak into it)."""
    with tempfile.TemporaryDirectory(prefix="trm-wheel-") as tmp:
        src = Path(tmp) / "src"
        for rel in project_files(project_dir):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project_dir / rel, src / rel)
        built = Path(tmp) / "dist"
        res = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                    str(built), str(src)])
        if res.returncode != 0:
            raise RuntimeError(f"building the project wheel failed:\n{_tail(res.stdout + res.stderr)}")
        (whl,) = list(built.glob("*.whl"))
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(whl, out / whl.name))


def resolve_for_target(roots: Sequence[str], python: str, out: Path, skip: Sequence[str],
                       log=print) -> tuple[list[WheelEntry], list[str]]:
    """Download `roots` and their dependencies (minus `skip` globs) as wheels for CPython `python` into `out`.

    Returns the wheels and the names skipped because the Kaggle image has them. Versions are pinned by the first
    download; a later requirement on the same project must accept that version, otherwise this raises.
    """
    from packaging.requirements import Requirement

    env = target_environment(python)
    chosen: dict[str, WheelEntry] = {}
    skipped: set[str] = set()
    queue = [Requirement(r) for r in roots]
    while queue:
        req = queue.pop(0)
        name = normalize(req.name)
        if matches_any(name, skip):
            skipped.add(name)
            continue
        if name in chosen:
            if not req.specifier.contains(chosen[name].version, prereleases=True):
                raise RuntimeError(f"conflict for py{python}: {req} but {name}=={chosen[name].version} was chosen")
            continue
        with tempfile.TemporaryDirectory(prefix="trm-dl-") as tmp:
            tmp = Path(tmp)
            spec = f"{req.name}{req.specifier}"
            res, source = _pip_download_binary(spec, python, tmp), "binary"
            if res.returncode != 0:
                log(f"  {spec}: no binary wheel for cp{python.replace('.', '')} manylinux x86_64, building the sdist")
                res, source = _pip_build_from_sdist(spec, tmp), "sdist-build"
                if res.returncode != 0:
                    raise RuntimeError(f"{spec}: neither a binary wheel nor a buildable sdist:\n"
                                       f"{_tail(res.stdout + res.stderr)}")
            (whl,) = list(tmp.glob("*.whl"))
            entry = WheelEntry.of(whl, source)
            if source == "sdist-build" and not all(t.endswith("-none-any") for t in entry.tags):
                raise RuntimeError(f"{whl.name} is not pure Python: build it on a machine matching the Kaggle image")
            shutil.copy2(whl, out / whl.name)
        chosen[name] = entry
        log(f"  + {entry.file} ({source})")
        meta = wheel_metadata(out / entry.file)
        for dep in meta.get_all("Requires-Dist") or []:
            dep = Requirement(dep)
            extras = req.extras or {""}
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in extras):
                queue.append(dep)
    return list(chosen.values()), sorted(skipped)


def gpu_extras(out: Path, flash_attn_wheel: str | None, log=print) -> tuple[list[WheelEntry], list[str]]:
    """The optional fused adam-atan2 (needs nvcc; built against *this* machine's torch) and a given flash-attn wheel.

    Neither is needed: `trm_core.optim.AdamATan2` is pure torch and attention uses SDPA. A wheel built here only
    works on a Kaggle image with the same python, torch and CUDA, which is why it is opt-in.
    """
    import torch

    entries, notes = [], []
    if shutil.which("nvcc") and torch.version.cuda:
        with tempfile.TemporaryDirectory(prefix="trm-gpu-") as tmp:
            env = {**os.environ, "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "7.5;8.0;8.6;8.9;9.0")}
            res = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                        tmp, "adam-atan2"], env=env)
            if res.returncode == 0:
                for whl in Path(tmp).glob("*.whl"):
                    shutil.copy2(whl, out / whl.name)
                    entries.append(WheelEntry.of(out / whl.name, "gpu-extra"))
            else:
                notes.append(f"adam-atan2: build failed:\n{_tail(res.stdout + res.stderr, 8)}")
    else:
        why = "nvcc not found" if not shutil.which("nvcc") else f"torch {torch.__version__} is not a CUDA build"
        notes.append(f"adam-atan2: skipped, {why} (trm_core.optim.AdamATan2 is the pure-torch equivalent)")
    if flash_attn_wheel:
        dest = out / Path(flash_attn_wheel).name
        if re.match(r"^https?://", flash_attn_wheel):
            res = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(out), flash_attn_wheel])
            if res.returncode != 0:
                raise RuntimeError(f"flash-attn download failed: {_tail(res.stderr)}")
        else:
            shutil.copy2(flash_attn_wheel, dest)
        entries.append(WheelEntry.of(dest, "gpu-extra"))
    else:
        notes.append("flash-attn: skipped, no --flash-attn-wheel given (attention uses torch SDPA)")
    for note in notes:
        log(note)
    return entries, notes


def build_wheelhouse(out: Path, *, project_dir: Path = REPO_ROOT, pythons: Sequence[str] = ("3.11", "3.12"),
                     preinstalled: Sequence[str] = (), extras: Sequence[str] = (), requirements: Sequence[str] = (),
                     with_gpu_extras: bool = False, flash_attn_wheel: str | None = None, log=print) -> dict:
    """Build the wheelhouse in `out` and return its manifest (also written to `out/manifest.json`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    skip = [*(normalize(n) for n in NEVER_SHIP), *(normalize(n) for n in preinstalled)]
    project = build_project_wheel(project_dir, out)
    entry = WheelEntry.of(project, "project")
    entry.targets = [f"cp{p.replace('.', '')}" for p in pythons]
    from packaging.requirements import Requirement

    # trm_core's own requirements, kept when unconditional or when their `extra == ...` marker is asked for.
    roots = [Requirement(r) for r in wheel_metadata(project).get_all("Requires-Dist") or []]
    wheels: dict[str, WheelEntry] = {entry.file: entry}
    skipped: dict[str, list[str]] = {}
    for python in pythons:
        env, tag = target_environment(python), f"cp{python.replace('.', '')}"
        picked = [f"{r.name}{'[' + ','.join(sorted(r.extras)) + ']' if r.extras else ''}{r.specifier}" for r in roots
                  if r.marker is None or any(r.marker.evaluate({**env, "extra": e}) for e in (*extras, ""))]
        log(f"{tag}: dependencies of trm_core{'[' + ','.join(extras) + ']' if extras else ''}"
            + (f" + {', '.join(requirements)}" if requirements else ""))
        got, skipped[python] = resolve_for_target([*picked, *requirements], python, out, skip, log=log)
        for e in got:
            e.targets = sorted(set(wheels.get(e.file, e).targets) | {tag})
            wheels[e.file] = e
    notes: list[str] = []
    if with_gpu_extras:
        extra_entries, notes = gpu_extras(out, flash_attn_wheel, log=log)
        wheels.update({e.file: e for e in extra_entries})
    manifest = {
        "created_by": "trm_core.packaging wheelhouse",
        "project": {"name": entry.name, "version": entry.version, "extras": list(extras)},
        "targets": [{"python": p, "implementation": "cp", "abi": f"cp{p.replace('.', '')}",
                     "platforms": list(MANYLINUX)} for p in pythons],
        "not_shipped_preinstalled": skipped,
        "notes": notes,
        "install": "pip install --no-index --find-links /kaggle/input/<wheels-dataset> trm_core",
        "wheels": [vars(w) for w in sorted(wheels.values(), key=lambda w: w.file)],
    }
    write_json(out / "manifest.json", manifest)
    (out / "SHA256SUMS").write_text("".join(f"{w['sha256']}  {w['file']}\n" for w in manifest["wheels"]))
    total = sum(w["size"] for w in manifest["wheels"])
    log(f"wheelhouse {out}: {len(manifest['wheels'])} wheels, {total / 1e6:.2f} MB")
    return manifest


def verify_wheelhouse(path: Path) -> list[str]:
    """Check `SHA256SUMS` against the files; returns the wheel names. Raises on a missing or altered file."""
    sums = Path(path) / "SHA256SUMS"
    if not sums.exists():
        raise FileNotFoundError(f"{sums} is missing: build the wheelhouse with wheels/build_wheelhouse.sh")
    names = []
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        f = Path(path) / name.lstrip("*")
        if not f.is_file() or sha256_file(f) != digest:
            raise ValueError(f"{f}: missing or its sha256 does not match SHA256SUMS")
        names.append(f.name)
    return names


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
        (out / STAGING_MARKER).write_text("Staged by trm_core.packaging (scripts/package_kaggle.sh); its weights/, "
                                          "wheels/, repo/ and kernel/ subfolders are replaced on the next run.\n")
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
    """`trm export CHECKPOINT DEST --arch k=v ...` in-process (the lead wires it in `trm_core.cli`)."""
    from trm_core.cli import main as trm_main

    argv = ["export", str(checkpoint), str(dest), *(["--arch", *arch] if arch else [])]
    try:
        rc = trm_main(argv)
    except SystemExit as e:
        rc = e.code
    if rc not in (None, 0):
        raise RuntimeError(f"trm export {checkpoint} failed (exit {rc})")


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
    rev = _run(["git", "-C", str(repo_dir), "rev-parse", "--verify", f"{ref}^{{commit}}"])
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
    params = {"data_dir": names.mount(names.competition), "weights_dir": names.mount(names.weights),
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


def run_kaggle(cmd: Sequence[str], secrets: Sequence[str], log=print) -> None:
    """Run one kaggle CLI command in a subprocess; its output is shown with any credential value masked."""
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError("the kaggle CLI is not on PATH: pip install kaggle six")
    res = _run(cmd)
    output = redact((res.stdout + res.stderr).strip(), secrets)
    if output:
        log(output)
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {res.returncode})")


def _git_short(repo_dir: Path) -> str:
    res = _run(["git", "-C", str(repo_dir), "rev-parse", "--short", "HEAD"])
    return res.stdout.strip() if res.returncode == 0 else "uncommitted"


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------

def _wheelhouse_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--python", dest="pythons", action="append", metavar="X.Y",
                   help="target CPython (repeatable; default 3.11 and 3.12, the Kaggle images of 2025 and 2026)")
    p.add_argument("--preinstalled", type=Path, default=DEFAULT_PREINSTALLED,
                   help="projects the Kaggle image already has (never shipped); default wheels/kaggle-preinstalled.txt")
    p.add_argument("--extra", dest="extras", action="append", default=[], help="trm_core extra to include, e.g. hub")
    p.add_argument("--requirement", dest="requirements", action="append", default=[],
                   help="additional requirement to ship, e.g. 'einops>=0.8'")
    p.add_argument("--with-gpu-extras", action="store_true",
                   help="also build the fused adam-atan2 (needs nvcc) and add --flash-attn-wheel if given")
    p.add_argument("--flash-attn-wheel", help="a prebuilt flash-attn wheel (file or URL) matching Kaggle's torch/CUDA")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trm_core.packaging", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    wh = sub.add_parser("wheelhouse", help="build the offline wheelhouse")
    wh.add_argument("--out", type=Path, required=True)
    wh.add_argument("--project-dir", type=Path, default=REPO_ROOT)
    _wheelhouse_args(wh)

    ks = sub.add_parser("kaggle-stage", help="stage Kaggle datasets and the kernel; upload with --upload")
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
    _wheelhouse_args(ks)
    args = parser.parse_args(argv)

    try:
        pythons = args.pythons or ["3.11", "3.12"]
        build_kw = dict(pythons=pythons, preinstalled=read_name_list(args.preinstalled), extras=args.extras,
                        requirements=args.requirements, with_gpu_extras=args.with_gpu_extras,
                        flash_attn_wheel=args.flash_attn_wheel)
        if args.command == "wheelhouse":
            build_wheelhouse(args.out, project_dir=args.project_dir, **build_kw)
            return 0
        return _kaggle_stage(args, build_kw)
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
    from trm_core.config import parse_value

    params = {}
    for kv in args.param:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ValueError(f"--param {kv!r}: expected KEY=VALUE")
        params[key] = parse_value(value)

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
        run_kaggle(cmd, secrets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
