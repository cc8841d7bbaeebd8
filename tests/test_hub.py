"""Hugging Face fetch / push, offline: a folder laid out like the hub's cache stands in for the hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trm_core import hub

pytest.importorskip("huggingface_hub")
ROOT = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """The hub's own cache layout: models--OWNER--NAME/{refs/main, snapshots/COMMIT/FILE -> blobs/...}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for i, (name, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"{i:040x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        snap = repo / "snapshots" / COMMIT / name
        snap.parent.mkdir(parents=True, exist_ok=True)
        snap.symlink_to(os.path.relpath(blob, snap.parent))


def offline_env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    # Offline, and an endpoint that goes nowhere in case the flag were ignored.
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9",
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return env


def test_fetch_known_checkpoint_offline_copies_the_files_and_records_its_settings(tmp_path):
    files = {"step_723914": b"weights" * 100, "all_config.yaml": b"arch:\n  puzzle_emb_len: 16\n",
             "trm.py": b"# not asked for\n"}
    make_hub_cache(tmp_path / "cache", "Trelis/TRM-ARC-AGI-II", files)
    out = tmp_path / "pretrained"
    res = subprocess.run([sys.executable, "-m", "trm_core.hub", "fetch", "aa2", "--local-dir", str(out)],
                         env=offline_env(tmp_path / "cache"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (out / "step_723914").read_bytes() == files["step_723914"]
    assert (out / "all_config.yaml").read_bytes() == files["all_config.yaml"]
    assert not (out / "trm.py").exists()
    source = json.loads((out / "hub_source.json").read_text())
    assert source["repo_id"] == "Trelis/TRM-ARC-AGI-II"
    assert source["arch_overrides"] == ["puzzle_emb_len=16", "H_cycles=3", "L_cycles=4"]
    assert len(source["files"]["step_723914"]["sha256"]) == 64
    assert "--arch puzzle_emb_len=16" in res.stdout


def test_fetch_offline_fails_clearly_for_a_file_not_in_the_cache(tmp_path):
    make_hub_cache(tmp_path / "cache", "me/trm-run", {"model.pt": b"x"})
    res = subprocess.run([sys.executable, "-m", "trm_core.hub", "fetch", "me/trm-run", "missing.pt",
                          "--local-dir", str(tmp_path / "out")],
                         env=offline_env(tmp_path / "cache"), capture_output=True, text=True)
    assert res.returncode != 0
    assert "missing.pt" in res.stderr or "offline" in res.stderr.lower()


def fake_token(prefix: str, n: int = 34) -> str:
    """A token-shaped string built at run time (a literal one would make this repo's own scan refuse it)."""
    return prefix + "".join("abcdefghijKLMNOPQRST0123456789"[i % 30] for i in range(n))


def _torch_file(path: Path, obj) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    import torch

    run = tmp_path / "run"
    weights = {"inner.w": torch.zeros(2, 2)}
    files = {
        "config.yaml": yaml.safe_dump({"arch": {"hidden_size": 64, "puzzle_emb_len": 16, "L_cycles": 4,
                                                "H_cycles": 3}, "lr": 1e-4}),
        "export/config.yaml": "hidden_size: 64\n", "identifiers.json": "[]", "metrics.jsonl": "{}\n",
        "hf_token.txt": "hf_SECRET", ".cache/huggingface/download/x.lock": "", "kaggle.json": '{"key": "k"}',
        "README.md": "old card", "wandb/run.json": "{}", "COMMANDS.txt": "trm train lr=1e-4\n",
    }
    for name, text in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    _torch_file(run / "export/model.pt", {"format": "trm_core", "model": weights})
    _torch_file(run / "step_100/model.pt", weights)
    _torch_file(run / "step_100/train_state.pt", {"model": weights, "optimizers": {"trunk": {"param_groups": []}}})
    _torch_file(run / "optimizer.pt", {"optimizer": {"state": {}, "param_groups": []}})
    (run / "learning_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    return run


class LocalHub:
    """A stand-in for HfApi that writes into a local folder, filtering exactly as the hub client does."""

    def __init__(self, root: Path):
        self.root = root
        self.created: list[tuple[str, bool]] = []

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **_):
        self.created.append((repo_id, private))

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, commit_message=None, **_):
        from huggingface_hub.utils import filter_repo_objects

        folder = Path(folder_path)
        rels = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        for rel in filter_repo_objects(rels, allow_patterns=allow_patterns):
            dest = self.root / repo_id / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes((folder / rel).read_bytes())


def uploaded(root: Path, repo_id: str) -> list[str]:
    return sorted(p.relative_to(root / repo_id).as_posix() for p in (root / repo_id).rglob("*") if p.is_file())


def test_push_uploads_only_allowlisted_files_and_a_generated_card(run_dir, tmp_path):
    remote = LocalHub(tmp_path / "remote")
    plan = hub.push(run_dir, "me/trm-run", api=remote)
    assert plan["uploaded"] and remote.created == [("me/trm-run", True)]  # private by default
    assert uploaded(tmp_path / "remote", "me/trm-run") == [
        "README.md", "config.yaml", "export/config.yaml", "export/model.pt", "identifiers.json",
        "learning_curves.png", "metrics.jsonl", "step_100/model.pt"]
    card = (tmp_path / "remote" / "me/trm-run" / "README.md").read_text()
    assert card.startswith("---\nlicense: mit") and card != "old card"
    assert "| puzzle_emb_len (shape-free) | 16 |" in card and "--arch L_cycles=4" in card
    assert "hf_SECRET" not in card


def test_push_never_uploads_tokens_or_caches_even_when_allowed(run_dir, tmp_path):
    plan = hub.push(run_dir, "me/x", allow=["*"], dry_run=True)
    assert "metrics.jsonl" in plan["files"]
    for never in ("hf_token.txt", "kaggle.json", ".cache/huggingface/download/x.lock", "wandb/run.json",
                  "optimizer.pt", "step_100/train_state.pt", "COMMANDS.txt"):
        assert never not in plan["files"]  # not secrets, caches, logs or optimizer state
        assert never in plan["skipped"]  # each is listed with its reason


def test_push_includes_optimizer_state_only_when_asked(run_dir, tmp_path):
    plan = hub.push(run_dir, "me/x", allow=["*.pt"], include_optimizer=True, dry_run=True)
    assert plan["files"] == ["export/model.pt", "optimizer.pt", "step_100/model.pt", "step_100/train_state.pt"]
    assert hub.push(run_dir, "me/x", allow=["*.pt"], include_resume_state=True, dry_run=True)["files"] == plan["files"]


def test_push_dry_run_does_not_touch_the_network_or_the_run(run_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # importing it would fail
    before = sorted(p.name for p in run_dir.rglob("*"))
    plan = hub.push(run_dir, "me/x", dry_run=True)
    assert not plan["uploaded"] and plan["card"]
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_model_card_without_arch_says_the_settings_are_unknown():
    card = hub.make_model_card("me/x", {"step_5": (10, "a" * 64)})
    assert "puzzle_emb_len" in card and "must be" in card
    assert "trm hub fetch me/x step_5" in card


def test_known_checkpoints_name_their_repo_files_and_honest_settings():
    aa2 = hub.KNOWN_CHECKPOINTS["aa2"]
    assert (aa2.repo_id, aa2.files) == ("Trelis/TRM-ARC-AGI-II", ("step_723914", "all_config.yaml"))
    assert (aa2.puzzle_emb_len, aa2.L_cycles) == (16, 4)
    assert hub.KNOWN_CHECKPOINTS["aa1"].L_cycles is None  # not recorded anywhere we could read
    for key, k in hub.KNOWN_CHECKPOINTS.items():
        assert "/" in k.repo_id and k.files and k.description, key


def test_hub_list_prints_every_known_checkpoint(capsys):
    assert hub.main(["list"]) == 0
    out = capsys.readouterr().out
    for k in hub.KNOWN_CHECKPOINTS.values():
        assert k.repo_id in out
