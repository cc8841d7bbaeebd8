#!/usr/bin/env python
"""The offline wheelhouse for Kaggle: the trm_core wheel plus every runtime dependency the Kaggle image lacks.

    .venv/bin/python wheels/wheelhouse.py --out wheels/wheelhouse --python 3.11 --python 3.12
    wheels/build_wheelhouse.sh --out wheels/wheelhouse        # the same, with a usage header and --dry-run

Repo tooling (it needs the repo and pip), kept beside the script that calls it, outside the package: nothing of it
ships in the wheel. For each target CPython (manylinux x86_64), binary wheels come from `pip download
--only-binary=:all: --platform --python-version --implementation --abi --no-deps`, one requirement at a time, so
that nothing the image already has (torch above all, see `kaggle-preinstalled.txt`) is ever pulled in as a
dependency; the dependency walk reads each wheel's own `Requires-Dist`. Sdist-only dependencies are built with `pip
wheel` and must come out pure Python. `manifest.json` and `SHA256SUMS` record name, version, tags, sha256 and size
of every file.
"""

from __future__ import annotations

import argparse
import email.parser
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from trm_core.utils import sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PREINSTALLED = Path(__file__).resolve().parent / "kaggle-preinstalled.txt"
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


def run_captured(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    """Run `cmd`, capturing its output as text."""
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
    return run_captured(cmd + [req])


def _pip_build_from_sdist(req: str, dest: Path) -> subprocess.CompletedProcess:
    """Download the sdist of `req` and build it into a wheel with `pip wheel` (only pure Python is accepted)."""
    sdists = dest / "sdist"
    got = run_captured([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--dest", str(sdists), req])
    if got.returncode != 0:
        return got
    (sdist,) = list(sdists.iterdir())
    return run_captured([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dest), str(sdist)])


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
    out = run_captured(["git", "-C", str(project_dir), "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
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
        res = run_captured([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
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
            res = run_captured([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
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
            res = run_captured([sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(out), flash_attn_wheel])
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
        "created_by": "wheels/wheelhouse.py",
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
# Entry point
# ----------------------------------------------------------------------------------------------------------

def add_wheelhouse_args(p: argparse.ArgumentParser) -> None:
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


def build_kwargs(args: argparse.Namespace) -> dict:
    """build_wheelhouse's keywords from the flags of `add_wheelhouse_args`."""
    return dict(pythons=args.pythons or ["3.11", "3.12"], preinstalled=read_name_list(args.preinstalled),
                extras=args.extras, requirements=args.requirements, with_gpu_extras=args.with_gpu_extras,
                flash_attn_wheel=args.flash_attn_wheel)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wheels/wheelhouse.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--project-dir", type=Path, default=REPO_ROOT)
    add_wheelhouse_args(parser)
    args = parser.parse_args(argv)
    try:
        build_wheelhouse(args.out, project_dir=args.project_dir, **build_kwargs(args))
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
