"""The offline wheelhouse: built from this repo, installed with --no-index into a fresh virtualenv.

The fresh venv stands in for the Kaggle image: torch and numpy are "preinstalled" (this venv's own copies, made
visible through a .pth file pointing at a folder of symlinks, so nothing else leaks in), and everything else
trm_core needs (here pyyaml) must come from the wheelhouse. Downloads pyyaml for this Python from PyPI.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import wheelhouse as wh  # wheels/ is on sys.path (conftest)

ROOT = Path(__file__).resolve().parent.parent
PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def clean_pip_env() -> dict:
    """No pip config, find-links or index from this machine: the install must work from the wheelhouse alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def expose(dists: list[str], farm: Path) -> None:
    """Symlink the files of `dists` and their dependencies into `farm` (the stand-in for Kaggle's site-packages)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(dists)
    while todo:
        dist = md.distribution(todo.pop())
        name = wh.normalize(dist.metadata["Name"])
        if name in seen:
            continue
        seen.add(name)
        for req in dist.requires or []:
            req = Requirement(req)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            src = Path(dist.locate_file(top))
            if src.exists() and not (farm / top).exists():
                (farm / top).symlink_to(src)


def test_wheelhouse_installs_offline_into_a_fresh_venv(tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    manifest = wh.build_wheelhouse(wheelhouse, project_dir=ROOT, pythons=[PY],
                                          preinstalled=["torch", "numpy"], log=lambda *a: None)
    files = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert any(f.startswith("trm_core-") for f in files)
    assert any(f.startswith("pyyaml-") for f in files)
    assert not any(f.startswith(("torch", "numpy", "nvidia")) for f in files)
    assert wh.verify_wheelhouse(wheelhouse) == [w["file"] for w in manifest["wheels"]]

    # The "Kaggle image": a bare venv that sees torch and numpy (and torch's own dependencies) only.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    site = subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    farm = tmp_path / "kaggle-image"
    farm.mkdir()
    expose(["torch", "numpy"], farm)
    assert not (farm / "yaml").exists()
    (Path(site) / "kaggle_image.pth").write_text(f"{farm}\n")

    env = clean_pip_env()
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "--no-index",
                          "--find-links", str(wheelhouse), "trm_core"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Successfully installed" in res.stdout and "torch" not in res.stdout.split("Successfully installed")[1]

    probe = ("import trm_core, yaml, torch, numpy; "
             "print(trm_core.__version__); print(trm_core.__file__); print(yaml.__file__); print(torch.__file__)")
    out = subprocess.run([vpy, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    version, trm_file, yaml_file, torch_file = out.stdout.split()
    assert version == manifest["project"]["version"]
    assert trm_file.startswith(site) and yaml_file.startswith(site)  # from the wheelhouse
    assert torch_file.startswith(str(farm))  # the image's torch, not a shipped one


def test_manifest_records_every_wheel_with_hash_size_and_tags(tmp_path):
    manifest = wh.build_wheelhouse(tmp_path, project_dir=ROOT, pythons=["3.11", "3.12"],
                                          preinstalled=wh.read_name_list(wh.DEFAULT_PREINSTALLED),
                                          log=lambda *a: None)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert [t["abi"] for t in manifest["targets"]] == ["cp311", "cp312"]
    for w in manifest["wheels"]:
        path = tmp_path / w["file"]
        assert w["size"] == path.stat().st_size and w["sha256"] == wh.sha256_file(path)
        assert w["tags"] and w["name"] and w["version"]
    (proj,) = [w for w in manifest["wheels"] if w["source"] == "project"]
    assert proj["tags"] == ["py3-none-any"] and proj["targets"] == ["cp311", "cp312"]
    with zipfile.ZipFile(tmp_path / proj["file"]) as zf:  # built from the git file list: no stray files
        assert "trm_core/kaggle.py" in zf.namelist()
        assert not [n for n in zf.namelist() if "packaging" in n or "staging" in n]  # repo tooling stays out
        assert not [n for n in zf.namelist() if "__pycache__" in n or n.startswith("tests/")]
    # the Kaggle image's own packages are recorded as not shipped, torch above all
    assert {"torch", "numpy", "pyyaml"} <= set(manifest["not_shipped_preinstalled"]["3.12"])
    sums = (tmp_path / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{w['sha256']}  {w['file']}" for w in manifest["wheels"]]


def test_torch_and_nvidia_are_never_shipped_even_if_not_listed():
    assert wh.matches_any("torch", [*wh.NEVER_SHIP])
    assert wh.matches_any("nvidia_cudnn_cu12", [wh.normalize(n) for n in wh.NEVER_SHIP])
    assert not wh.matches_any("pyyaml", [*wh.NEVER_SHIP])


def test_preinstalled_list_names_the_kaggle_image_packages():
    names = wh.read_name_list(wh.DEFAULT_PREINSTALLED)
    for must in ("torch", "numpy", "pyyaml", "matplotlib", "papermill", "huggingface-hub", "nvidia-*"):
        assert must in names
    assert "Colab" in wh.DEFAULT_PREINSTALLED.read_text()  # says where the fact comes from


def test_verify_wheelhouse_rejects_an_altered_wheel(tmp_path):
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "SHA256SUMS").write_text(f"{wh.sha256_file(tmp_path / 'a-1.0-py3-none-any.whl')}  "
                                         "a-1.0-py3-none-any.whl\n")
    assert wh.verify_wheelhouse(tmp_path) == ["a-1.0-py3-none-any.whl"]
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="sha256"):
        wh.verify_wheelhouse(tmp_path)


def test_marker_environment_is_the_kaggle_target_not_this_machine():
    from packaging.markers import Marker

    assert Marker('python_version >= "3.12"').evaluate(wh.target_environment("3.12"))
    assert not Marker('python_version >= "3.12"').evaluate(wh.target_environment("3.11"))
    assert Marker('sys_platform == "linux" and platform_machine == "x86_64"').evaluate(
        wh.target_environment("3.11"))


def test_build_wheelhouse_script_is_a_thin_dry_runnable_wrapper():
    res = subprocess.run(["bash", str(ROOT / "wheels" / "build_wheelhouse.sh"), "--dry-run", "--python", "3.12"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "wheels/wheelhouse.py" in res.stdout and "--python 3.12" in res.stdout
