"""Hardening: no pickle from a file is ever executed, and no credential leaves through `trm hub push` or Kaggle staging.

Every load path gets a file with a planted payload (a pickle whose `__reduce__` opens a marker file for writing:
the same mechanism as an `os.system` payload, without a shell). The payload is shown to be real (loading with
weights_only=False does create the marker), then every trm_core path that reads such a file must refuse it,
name the file, and leave no marker.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from trm_core.cli import main as trm
from trm_core.train import (ConfigError, Trainer, TrainConfig, latest_checkpoint, load_resume_file, rng_state,
                            set_rng_state)

TINY_ARCH = dict(hidden_size=32, num_heads=2, L_layers=1, H_cycles=1, L_cycles=1, puzzle_emb_ndim=32,
                 puzzle_emb_len=1, halt_max_steps=2, halt_exploration_prob=0.0, forward_dtype="float32")


class Payload:
    """Unpickling this runs `open(marker, "w")`: code execution, as an `os.system` payload would be."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def fake_token(prefix: str, n: int = 36, alphabet: str = "abcdefghijKLMNOPQRST0123456789") -> str:
    """A token-shaped string built at run time (a literal one would make this repository's own scan refuse it)."""
    return prefix + "".join(alphabet[(7 * i) % len(alphabet)] for i in range(n))


PEM_BEGIN = "-----BEGIN " + "OPENSSH PRIVATE KEY-----"  # split, so this file is not itself a finding


def tiny_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(arch=dict(TINY_ARCH), data_paths=[str(data)], global_batch_size=8, epochs=4, eval_interval=None,
                lr=3e-3, lr_warmup_steps=1, output_dir=str(out), run_name="t", progress=False, seed=0,
                checkpoint_every_eval=False, evaluate=False, max_steps=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained_run(small_dataset, tmp_path_factory) -> Path:
    """A finished 2-step run folder (model.pt, train_state.pt, carry_rank0.pt); copy it before planting."""
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(tiny_cfg(small_dataset, out))
    trainer.setup()
    trainer.train()
    return trainer.run_dir


def resume(small_dataset, run_dir: Path) -> Trainer:
    trainer = Trainer(tiny_cfg(small_dataset, run_dir.parent, max_steps=4, resume=str(run_dir)))
    trainer.setup()
    return trainer


def plant(path: Path, marker: Path, legacy: bool = False) -> None:
    """Rewrite a torch file with the payload added next to its real content."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    obj["extra_payload"] = Payload(marker)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


def test_the_planted_payload_is_real(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(1), "x": Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)  # what resume used to do
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
@pytest.mark.parametrize("name", ["train_state.pt", "carry_rank0.pt"])
def test_a_payload_in_a_resume_file_is_refused_and_never_runs(trained_run, small_dataset, tmp_path, name, legacy):
    run = shutil.copytree(trained_run, tmp_path / "t")
    marker = tmp_path / "pwned"
    plant(latest_checkpoint(run) / name, marker, legacy)
    with pytest.raises(ConfigError) as e:
        resume(small_dataset, run)
    assert f"{name}: refused" in str(e.value) and "Nothing in it was run" in str(e.value)
    assert "weights_only set to `False`" not in str(e.value)  # never the advice that would run it
    assert not marker.exists()


def test_trm_train_resume_of_a_planted_run_is_one_line_and_exit_2(trained_run, small_dataset, tmp_path, capsys):
    run = shutil.copytree(trained_run, tmp_path / "t")
    marker = tmp_path / "pwned"
    plant(latest_checkpoint(run) / "carry_rank0.pt", marker)
    overrides = [f"arch.{k}={v}" for k, v in TINY_ARCH.items()] + [
        f"data_paths=[{small_dataset}]", f"output_dir={tmp_path}", "+run_name=t", f"resume={run}", "max_steps=4",
        "global_batch_size=8", "epochs=4", "eval_interval=null", "evaluate=false", "progress=false"]
    assert trm(["train", "--config-name", "cfg_tiny", *overrides]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "carry_rank0.pt: refused" in err
    assert not marker.exists()


def test_a_checkpoint_from_the_older_rng_format_resumes_with_the_same_rng_draws(trained_run, small_dataset,
                                                                                  tmp_path):
    # Older trm_core wrote numpy's RNG state as its tuple (a numpy array inside) and Python's as a tuple: plain
    # data that weights_only loading allows once numpy arrays are allowed, upgraded on load.
    run = shutil.copytree(trained_run, tmp_path / "t")
    rank_file = latest_checkpoint(run) / "carry_rank0.pt"
    state = torch.load(rank_file, weights_only=True)
    np.random.seed(123)
    random.seed(456)
    state.update(numpy_rng=np.random.get_state(), python_rng=random.getstate())  # what older versions wrote
    torch.save(state, rank_file)
    expected = (np.random.rand(), random.random())
    resume(small_dataset, run)
    assert (np.random.rand(), random.random()) == expected


@pytest.mark.parametrize("damage", ["truncated", "empty", "not a dict", "wrong weights", "bad carries",
                                    "bad rng"])
def test_a_damaged_resume_file_is_named(trained_run, small_dataset, tmp_path, damage):
    run = shutil.copytree(trained_run, tmp_path / "t")
    name = "carry_rank0.pt" if damage in ("bad carries", "bad rng") else "train_state.pt"
    path = latest_checkpoint(run) / name
    state = torch.load(path, weights_only=True)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "not a dict":
        torch.save([1, 2, 3], path)
    elif damage == "wrong weights":
        torch.save({**state, "model": {"x": torch.zeros(1)}}, path)
    elif damage == "bad carries":
        torch.save({**state, "carries": [5]}, path)
    else:
        torch.save({**state, "numpy_rng": {**state["numpy_rng"], "keys": torch.zeros(3, dtype=torch.int64)}}, path)
    with pytest.raises(ConfigError, match=name):
        resume(small_dataset, run)


def test_resume_files_hold_only_tensors_and_plain_types_and_rng_states_round_trip(trained_run, tmp_path):
    ckpt = latest_checkpoint(trained_run)
    for name in ("train_state.pt", "carry_rank0.pt"):
        torch.load(ckpt / name, weights_only=True)  # no allow-listed globals needed
    state = rng_state()
    expected = (random.random(), float(np.random.rand()), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)
    torch.save({"carries": None, **state}, tmp_path / "carry_rank0.pt")  # through a file, as a resume reads it
    set_rng_state(load_resume_file(tmp_path / "carry_rank0.pt", "cpu", ("carries", "torch_rng", "numpy_rng",
                                                                         "python_rng")))
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expected


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_payload_in_model_pt_is_refused_by_every_reader(trained_run, tmp_path, capsys, legacy):
    from trm_core.checkpoint import CheckpointError, load_checkpoint
    from trm_core.hub import classify
    from trm_core.checkpoint import checkpoint_canvas

    folder = shutil.copytree(latest_checkpoint(trained_run), tmp_path / "ckpt")
    (folder / "config.yaml").unlink()  # so that checkpoint_canvas has to open the weights
    marker = tmp_path / "pwned"
    plant(folder / "model.pt", marker, legacy)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(folder / "model.pt")
    for argv in (["info", str(folder / "model.pt")], ["export", str(folder / "model.pt"), str(tmp_path / "exp")],
                 ["eval", "--checkpoint", str(folder / "model.pt"), "--output-dir", str(tmp_path / "ev"),
                  "--data", str(tmp_path)]):
        assert trm(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "model.pt" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(Exception):
        checkpoint_canvas(folder / "model.pt")
    kind, why = classify(folder, "model.pt")
    assert kind is None and "refused" in why
    assert not marker.exists()


# --- trm hub push -------------------------------------------------------------------------------------------

def secret_files() -> dict[str, str]:
    """The files the attack put in a run folder, each holding a live-looking credential."""
    return {
        "api_key.json": json.dumps({"token": fake_token("hf_")}),
        "deploy.yaml": f"wandb:\n  key: {fake_token('wb_', 30)}\n",
        "wandb-settings.json": json.dumps({"api_key": fake_token("", 40, "0123456789abcdef")}),
        ".pypirc": f"[pypi]\nusername = __token__\npassword = {fake_token('pypi-AgEIcHlwaS5vcmc', 40)}\n",
        ".ssh/id_rsa": f"{PEM_BEGIN}\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        ".env": f"KAGGLE_KEY={fake_token('', 32, '0123456789abcdef')}\n",
    }


@pytest.fixture
def hub_run(trained_run, tmp_path) -> Path:
    run = shutil.copytree(trained_run, tmp_path / "run")
    for name, text in secret_files().items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    return run


@pytest.mark.parametrize("allow", [None, ["*"]], ids=["default", "allow-star"])
def test_push_never_selects_secret_files_or_resume_state(hub_run, allow):
    from trm_core import hub

    plan = hub.push(hub_run, "me/x", allow=allow or hub.DEFAULT_ALLOW, dry_run=True)
    ckpt = latest_checkpoint(hub_run).relative_to(hub_run).as_posix()
    assert f"{ckpt}/model.pt" in plan["files"] and "config.yaml" in plan["files"] and "metrics.jsonl" in plan["files"]
    for name in [*secret_files(), f"{ckpt}/carry_rank0.pt", f"{ckpt}/train_state.pt", "COMMANDS.txt",
                 "ENVIRONMENT.txt"]:
        assert name not in plan["files"], name
    assert "resume state" in plan["skipped"][f"{ckpt}/carry_rank0.pt"]
    assert f"{ckpt}/carry_rank0.pt" in hub.push(hub_run, "me/x", include_resume_state=True, dry_run=True)["files"]


def test_resume_state_is_recognised_by_its_content_whatever_its_name(hub_run):
    from trm_core import hub

    ckpt = latest_checkpoint(hub_run)
    shutil.copy(ckpt / "carry_rank0.pt", hub_run / "weights_final.pt")
    assert hub.classify(hub_run, "weights_final.pt")[0] == "resume"


HEX = "0123456789abcdef"
# kind -> (text as it would sit in a config or a pickled string, a metrics.jsonl record holding it)
TOKENS = {
    "Hugging Face token": lambda: (fake_token("hf_"), {"note": fake_token("hf_")}),
    "W&B API key": lambda: (fake_token("wb_", 30), {"note": fake_token("wb_", 30)}),
    "Kaggle API key": lambda: (json.dumps({"username": "me", "key": fake_token("", 32, HEX)}),
                               {"username": "me", "key": fake_token("", 32, HEX)}),
    "Kaggle access token": lambda: (fake_token("KGAT_", 32), {"note": fake_token("KGAT_", 32)}),
    "GitHub token": lambda: (fake_token("ghp_"), {"note": fake_token("ghp_")}),
    "private key": lambda: (PEM_BEGIN, {"note": PEM_BEGIN}),
    "password or API key assignment": lambda: ("\npassword = Sup3rS3cretValue\n", {"password": "Sup3rS3cretValue"}),
}


@pytest.mark.parametrize("kind", TOKENS)
@pytest.mark.parametrize("where", ["config.yaml", "metrics.jsonl", "model.pt"])
def test_a_credential_inside_a_model_file_refuses_the_push_naming_the_file_not_the_token(hub_run, kind, where,
                                                                                         capsys):
    from trm_core import hub
    from trm_core.secrets_scan import SecretFoundError

    text, record = TOKENS[kind]()
    secret = text.strip().splitlines()[0]
    ckpt = latest_checkpoint(hub_run)
    for name in secret_files():
        (hub_run / name).unlink()
    if where == "config.yaml":  # a YAML block scalar keeps the text as it is
        block = "".join(f"  {line}\n" for line in text.strip().splitlines())
        (hub_run / "config.yaml").write_text((hub_run / "config.yaml").read_text() + f"notes: |\n{block}")
        rel = "config.yaml"
    elif where == "metrics.jsonl":
        (hub_run / "metrics.jsonl").write_text(json.dumps({"step": 1, **record}) + "\n")
        rel = "metrics.jsonl"
    else:
        obj = torch.load(ckpt / "model.pt", weights_only=True)
        obj["extra"] = {**obj.get("extra", {}), "note": text}
        torch.save(obj, ckpt / "model.pt")
        rel = (ckpt / "model.pt").relative_to(hub_run).as_posix()
    assert hub.classify(hub_run, rel)[0] is not None  # a file the push would otherwise upload

    class NoUpload:
        def create_repo(self, *a, **k):
            raise AssertionError("a repo was created")

        upload_folder = create_repo

    with pytest.raises(SecretFoundError) as e:
        hub.push(hub_run, "me/x", api=NoUpload())
    assert rel in str(e.value) and kind in str(e.value)
    assert secret not in str(e.value)
    assert trm(["hub", "push", str(hub_run), "me/x", "--dry-run"]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err and rel in out.err and secret not in out.err + out.out


# --- Kaggle staging ---------------------------------------------------------------------------------------

def test_kaggle_staging_refuses_a_folder_holding_a_credential(tmp_path):
    import kaggle_staging as staging
    from trm_core.secrets_scan import SecretFoundError

    export = tmp_path / "export"
    export.mkdir()
    (export / "model.pt").write_bytes(b"\0" * 64)
    (export / "config.yaml").write_text(f"hidden_size: 64\nhf_token: {fake_token('hf_')}\n")
    (export / "README.md").write_text("# card\n")
    names = staging.KaggleNames(user="me")
    with pytest.raises(SecretFoundError, match=r"config\.yaml \(Hugging Face token\)"):
        staging.stage_weights(tmp_path / "out", names, export_dir=export)


def test_kaggle_repo_staging_scans_the_committed_files(tmp_path):
    import kaggle_staging as staging
    from trm_core.secrets_scan import SecretFoundError

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.sh").write_text(f"export WANDB_API_KEY={fake_token('', 40, '0123456789abcdef')}\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "x"]):
        subprocess.run(git + cmd, check=True)
    with pytest.raises(SecretFoundError, match=r"train\.sh \(W&B API key\)"):
        staging.stage_repo(tmp_path / "out", staging.KaggleNames(user="me"), repo_dir=repo)


def test_this_repository_holds_no_credentials_so_its_own_repo_dataset_stages():
    from trm_core.secrets_scan import scan_paths

    root = Path(__file__).resolve().parent.parent
    files = subprocess.run(["git", "-C", str(root), "ls-files"], capture_output=True, text=True).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    assert scan_paths(root, [f for f in files if (root / f).is_file()]) == []


def test_an_existing_out_folder_is_never_emptied_unasked(tmp_path, capsys):
    import kaggle_staging as staging

    out = tmp_path / "mine"
    (out / "weights").mkdir(parents=True)
    (out / "weights" / "thesis.tex").write_text("years of work")
    (out / "notes.txt").write_text("keep me")
    export = tmp_path / "export"
    export.mkdir()
    for name, text in (("model.pt", "\0"), ("config.yaml", "a: 1\n"), ("README.md", "# c\n")):
        (export / name).write_text(text)
    argv = ["weights", "--user", "me", "--out", str(out), "--export-dir", str(export)]
    assert staging.main(argv) == 1
    err = capsys.readouterr().err
    assert "nothing was deleted" in err and "--force" in err and "Traceback" not in err
    assert (out / "weights" / "thesis.tex").read_text() == "years of work"
    assert staging.main([*argv, "--force"]) == 0  # asked: only the weights/ subfolder is replaced
    assert (out / "notes.txt").read_text() == "keep me" and (out / "weights" / "model.pt").exists()
    assert staging.main(argv) == 0  # a staging folder now: re-staging needs no flag
    assert staging.main(["weights", "--user", "me", "--out", str(out / "notes.txt"),
                           "--export-dir", str(export)]) == 1
    assert "is a file" in capsys.readouterr().err


def test_the_secret_scan_finds_a_token_split_across_read_chunks(tmp_path, monkeypatch):
    from trm_core import secrets_scan

    monkeypatch.setattr(secrets_scan, "CHUNK", 4096)
    token = fake_token("hf_")
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\0" * (4096 - 10) + token.encode() + b"\0" * 100)
    assert secrets_scan.scan_file(path) == "Hugging Face token"
    import zipfile

    with zipfile.ZipFile(tmp_path / "x.whl", "w", zipfile.ZIP_DEFLATED) as zf:  # compressed: not in the raw bytes
        zf.writestr("pkg/settings.cfg", f"[auth]\ntoken = {token}\n")
    assert "Hugging Face token" in secrets_scan.scan_file(tmp_path / "x.whl")
    (tmp_path / "code.py").write_text("password = password_from_prompt\n")  # code, not a credential
    assert secrets_scan.scan_file(tmp_path / "code.py") is None


def test_every_torch_load_in_the_package_is_weights_only():
    """A static guard: a new `torch.load` without weights_only=True (or an `np.load` with pickles) fails here."""
    import ast

    pkg = Path(__file__).resolve().parent.parent / "trm_core"
    found = []
    for path in sorted(pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}
            if (owner, node.func.attr) == ("torch", "load"):
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                found.append((path.name, node.lineno, ok))
            if (owner, node.func.attr) == ("np", "load") and "allow_pickle" in kw:
                found.append((path.name, node.lineno, False))
    assert found and all(ok for _, _, ok in found), [f for f in found if not f[2]]
