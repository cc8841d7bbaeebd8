"""The training engine: configs and overrides, distributed equivalence, accumulation, resume, freezing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import trm_core

from trm_core.config import ConfigError
from trm_core.train import Trainer, TrainConfig, latest_checkpoint, load_config, run

TINY_ARCH = dict(hidden_size=32, num_heads=2, expansion=2, L_layers=1, H_cycles=2, L_cycles=1, puzzle_emb_ndim=32,
                 puzzle_emb_len=1, halt_max_steps=2, halt_exploration_prob=0.0, forward_dtype="float32")


def tiny_cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(arch=dict(TINY_ARCH), data_paths=[str(data)], global_batch_size=8, epochs=4, eval_interval=None,
                lr=3e-3, lr_warmup_steps=1, puzzle_emb_lr=1e-2, weight_decay=0.0, output_dir=str(out),
                run_name="t", progress=False, seed=0, checkpoint_every_eval=False)
    base.update(kw)
    return TrainConfig(**base)


def cli_overrides(cfg: TrainConfig) -> list[str]:
    """The same config as command-line overrides over cfg_tiny (for subprocess runs)."""
    out = [f"arch.{k}={v}" for k, v in cfg.arch.items()]
    for k in ("global_batch_size", "epochs", "lr", "lr_warmup_steps", "puzzle_emb_lr", "weight_decay", "seed",
              "max_steps", "checkpoint_every_n_steps", "keep_last_checkpoints"):
        if getattr(cfg, k) is not None:
            out.append(f"{k}={getattr(cfg, k)}")
    out += [f"data_paths=[{cfg.data_paths[0]}]", f"output_dir={cfg.output_dir}", f"+run_name={cfg.run_name}",
            "progress=false", "eval_interval=null", "checkpoint_every_eval=false"]
    return out


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(latest_checkpoint(run_dir) / "train_state.pt", weights_only=True)
    return state["model"]


def assert_same_weights(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=atol), f"{k} differs by {(a[k].float() - b[k].float()).abs().max()}"


# --- config ------------------------------------------------------------------------------------------------

def test_seed_style_overrides_are_parsed_and_typed():
    cfg = load_config("cfg_pretrain", ["arch.L_cycles=6", 'data_paths="[a/b,c]"', "+run_name=x", "lr=2e-4",
                                       "ema=False"])
    assert cfg.arch["L_cycles"] == 6 and cfg.data_paths == ["a/b", "c"] and cfg.run_name == "x"
    assert cfg.lr == 2e-4 and isinstance(cfg.lr, float) and cfg.ema is False


def test_an_unknown_key_is_an_error_naming_the_key_and_the_file():
    with pytest.raises(ConfigError, match=r"cfg_pretrain.yaml.*'learning_rate'"):
        load_config("cfg_pretrain", ["learning_rate=1e-3"])
    with pytest.raises(ConfigError, match=r"arch.*'L_cycle'"):
        load_config("cfg_pretrain", ["arch.L_cycle=4"])


def test_a_mistyped_value_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"global_batch_size: expected an integer, got 'lots'"):
        load_config("cfg_pretrain", ["global_batch_size=lots"])


def test_arch_group_override_swaps_in_the_named_arch_file():
    cfg = load_config("cfg_pretrain", ["arch=trm_tiny", "arch.L_cycles=3"])
    assert cfg.arch["hidden_size"] == 64 and cfg.arch["L_cycles"] == 3


def test_shipped_configs_carry_the_seed_values():
    c = load_config("cfg_pretrain")
    assert (c.global_batch_size, c.epochs, c.eval_interval, c.lr, c.puzzle_emb_lr, c.lr_warmup_steps,
            c.weight_decay, c.beta1, c.beta2, c.ema, c.ema_rate, c.checkpoint_every_eval) == \
        (768, 100000, 10000, 1e-4, 1e-2, 2000, 0.1, 0.9, 0.95, True, 0.999, True)
    emb = load_config("cfg_emb_posttrain")
    assert emb.freeze_weights and not emb.ema
    post = load_config("cfg_posttrain")
    assert post.freeze_weights_epochs * 4 == post.epochs and post.ema
    for name in ("cfg_pretrain_lora", "cfg_kaggle_lora"):
        lora = load_config(name)
        assert lora.lora["rank"] == 1 and lora.lora["alpha"] == 16.0 and lora.ema is False
    load_config("cfg_tiny")


def test_the_gpu_compact_recipe_trains_the_shipped_cpu_trunks_architecture_at_upstreams_scale():
    gpu, cpu = load_config("cfg_compact_pretrain_gpu"), load_config("cfg_cpu_pretrain")
    shipped = yaml.safe_load((Path(trm_core.__file__).parent / "trunks" / "cpu_c12_h64" / "config.yaml").read_text())
    differs = {k for k in gpu.arch if gpu.arch[k] != cpu.arch.get(k)}
    assert differs == {"forward_dtype"} and gpu.arch["forward_dtype"] == "auto"  # bf16 on GPU, fp32 on CPU
    assert all(shipped["arch"][k] == v for k, v in cpu.arch.items() if k != "forward_dtype"), shipped["arch"]
    assert (gpu.global_batch_size, gpu.epochs, gpu.lr_warmup_steps, gpu.ema) == (768, 100000, 2000, True)
    assert (gpu.lr, gpu.puzzle_emb_lr, gpu.weight_decay) == (cpu.lr, cpu.puzzle_emb_lr, cpu.weight_decay)


def test_fork_derived_configs_use_the_forks_optimizer_and_all_mirror_upstreams_voting():
    for name in ("cfg_posttrain", "cfg_emb_posttrain", "cfg_pretrain_lora", "cfg_kaggle_lora"):
        cfg = load_config(name)
        assert cfg.optimizer == "adam_atan2_pytorch", name  # their learning rates were tuned with it
        assert cfg.aggregated_voting and cfg.count_empty_predictions, name
    upstream = load_config("cfg_pretrain")
    assert upstream.optimizer == "adam_atan2" and upstream.aggregated_voting and upstream.count_empty_predictions
    tiny = load_config("cfg_tiny")  # not a mirror of anyone's run: our defaults
    assert tiny.optimizer == "adam_atan2" and not tiny.aggregated_voting and not tiny.count_empty_predictions


def test_print_config_shows_the_resolved_config(capsys):
    from trm_core.train import main

    assert main(["--config-name", "cfg_tiny", "--print-config", "lr=5e-4"]) == 0
    assert "lr: 0.0005" in capsys.readouterr().out


# --- training ------------------------------------------------------------------------------------------------

def test_tiny_pretraining_on_real_tasks_lowers_the_loss(small_dataset, tmp_path):
    trainer = run(tiny_cfg(small_dataset, tmp_path, epochs=40, arch=dict(TINY_ARCH, halt_max_steps=1)))
    losses = [r["train/lm_loss"] for r in trainer.history if "train/lm_loss" in r]
    assert len(losses) > 20
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_gradient_accumulation_over_4_micro_batches_matches_one_full_batch(small_dataset, tmp_path):
    full = run(tiny_cfg(small_dataset, tmp_path / "a", max_steps=6))
    acc = run(tiny_cfg(small_dataset, tmp_path / "b", max_steps=6, micro_batch_size=2))
    assert acc.n_micro == 4
    assert_same_weights(full.model.state_dict(), acc.model.state_dict())


def test_two_gloo_processes_match_one_process(small_dataset, tmp_path):
    cfg = tiny_cfg(small_dataset, tmp_path, max_steps=5)
    one = run(cfg)
    # --standalone: torchrun picks a free port itself (a fixed one failed once on a busy machine)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "trm_core.train", "--config-name", "cfg_tiny", *cli_overrides(tiny_cfg(small_dataset, tmp_path / "two", max_steps=5))]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_weights(one.model.state_dict(), final_weights(tmp_path / "two" / "t"))


def test_a_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_run(small_dataset, tmp_path):
    cfg = tiny_cfg(small_dataset, tmp_path / "straight", epochs=200, max_steps=120, checkpoint_every_n_steps=10,
                   arch=dict(TINY_ARCH, halt_exploration_prob=0.3, halt_max_steps=3))
    straight = run(cfg)
    killed_cfg = tiny_cfg(small_dataset, tmp_path / "killed", epochs=200, max_steps=120,
                          checkpoint_every_n_steps=10, arch=dict(cfg.arch))
    cmd = [sys.executable, "-m", "trm_core.train", "--config-name", "cfg_tiny", *cli_overrides(killed_cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    ckpts = tmp_path / "killed" / "t" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (ckpts / "step_20").exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = run(tiny_cfg(small_dataset, tmp_path / "killed", epochs=200, max_steps=120,
                           checkpoint_every_n_steps=10, arch=dict(cfg.arch), resume=str(tmp_path / "killed" / "t")))
    assert resumed.step == straight.step == 120
    assert_same_weights(straight.model.state_dict(), resumed.model.state_dict(), atol=0)


def test_max_train_seconds_stops_training_at_its_deadline_and_still_checkpoints(small_dataset, tmp_path):
    t0 = time.perf_counter()
    trainer = run(tiny_cfg(small_dataset, tmp_path, epochs=100000, max_train_seconds=1.0, evaluate=False))
    assert 0 < trainer.step < trainer.total_steps
    assert time.perf_counter() - t0 < 30
    assert latest_checkpoint(trainer.run_dir).name == f"step_{trainer.step}"


def test_a_global_batch_larger_than_an_epoch_is_an_error_not_a_silent_zero_step_run(small_dataset, tmp_path):
    with pytest.raises(ConfigError, match="larger than one epoch"):
        Trainer(tiny_cfg(small_dataset, tmp_path, global_batch_size=4096)).setup()


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_freeze_weights_trains_only_the_puzzle_embeddings(small_dataset, tmp_path):
    trainer = Trainer(tiny_cfg(small_dataset, tmp_path, max_steps=3, freeze_weights=True))
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert changed(before, trainer.model.state_dict()) == {"inner.puzzle_emb.weights"}
    assert all(p.grad is None for p in trainer.model.parameters())  # trunk gradients never computed


def test_freeze_weights_epochs_trains_embeddings_first_then_everything(small_dataset, tmp_path):
    trainer = Trainer(tiny_cfg(small_dataset, tmp_path, epochs=8, freeze_weights_epochs=4))
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    snapshots = {}
    original = trainer.train_step

    def spy(batch):
        out = original(batch)
        snapshots[trainer.step] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        return out

    trainer.train_step = spy
    trainer.train()
    frozen_end = trainer.freeze_until_step
    assert 0 < frozen_end < trainer.step
    assert changed(before, snapshots[frozen_end]) == {"inner.puzzle_emb.weights"}
    assert "inner.L_level.layers.0.mlp.down_proj.weight" in changed(before, snapshots[trainer.step])


def test_lora_mode_trains_only_adapters_and_embeddings(small_dataset, tmp_path):
    trainer = Trainer(tiny_cfg(small_dataset, tmp_path, max_steps=3, lora={"rank": 2, "alpha": 4.0}))
    trainer.setup()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    moved = changed(before, trainer.model.state_dict())
    base = {k for k in moved if "lora" not in k and k not in ("inner.puzzle_emb.weights",
                                                              "inner.embed_tokens.embedding_weight")}
    assert not base, f"base weights changed: {base}"
    assert any("lora" in k for k in moved) and "inner.puzzle_emb.weights" in moved


# --- checkpoints and run folder ------------------------------------------------------------------------------

def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_one_loadable(small_dataset, tmp_path, monkeypatch):
    trainer = Trainer(tiny_cfg(small_dataset, tmp_path, max_steps=2))
    trainer.setup()
    trainer.train()  # final checkpoint at step 2
    good = latest_checkpoint(trainer.run_dir)
    import trm_core.train as train_mod

    def exploding_save(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(train_mod, "atomic_torch_save", exploding_save)
    trainer.step += 1
    with pytest.raises(OSError):
        trainer.save_checkpoint()
    assert latest_checkpoint(trainer.run_dir) == good
    torch.load(good / "train_state.pt", weights_only=True)
    from trm_core.checkpoint import load_checkpoint

    load_checkpoint(good / "model.pt")


def test_only_the_last_k_checkpoints_are_kept(small_dataset, tmp_path):
    trainer = run(tiny_cfg(small_dataset, tmp_path, max_steps=8, checkpoint_every_n_steps=2, keep_last_checkpoints=2))
    steps = sorted(int(p.name[5:]) for p in (trainer.run_dir / "checkpoints").iterdir())
    assert steps == [6, 8]


def test_the_run_folder_holds_config_commands_environment_metrics_and_curves(small_dataset, tmp_path):
    trainer = run(tiny_cfg(small_dataset, tmp_path, max_steps=3, eval_interval=None))
    run_dir = trainer.run_dir
    for name in ("config.yaml", "COMMANDS.txt", "ENVIRONMENT.txt", "metrics.jsonl"):
        assert (run_dir / name).exists(), name
    assert "torch:" in (run_dir / "ENVIRONMENT.txt").read_text()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/lm_loss" in r] == [1, 2, 3]
    assert (run_dir / "checkpoints" / "step_3" / "model.pt").exists()


def test_a_trainer_set_up_from_metadata_alone_trains_exactly_like_a_full_setup(small_dataset, tmp_path):
    full = Trainer(tiny_cfg(small_dataset, tmp_path / "full"))
    full.setup()
    bare = Trainer(tiny_cfg(small_dataset, tmp_path / "bare"))
    bare.setup_without_data(full.metadata, total_steps=full.total_steps)
    assert not (tmp_path / "bare").exists()  # no run folder, no dataset read
    batches = iter(full.train_data.iter_train(0))
    for _ in range(2):
        batch = next(batches)
        assert full.train_step(batch)["train/lm_loss"] == bare.train_step(batch)["train/lm_loss"]
    assert_same_weights(full.model.state_dict(), bare.model.state_dict(), atol=0)


def test_under_a_deadline_the_cosine_decay_follows_the_clock_and_ends_at_lr_min(small_dataset, tmp_path):
    # 10,000 epochs would take hours: only the 3 s deadline can bring the schedule to its end.
    cfg = tiny_cfg(small_dataset, tmp_path, epochs=10000, max_train_seconds=3.0, lr=1e-3, lr_min_ratio=0.1,
                   lr_warmup_steps=1, evaluate=False)
    trainer = run(cfg)
    lrs = [h["train/lr"] for h in trainer.history if "train/lr" in h]
    assert trainer.step < trainer.total_steps / 100
    assert lrs[1] > 0.9e-3  # just after warmup: the peak
    assert lrs[-1] < 0.15e-3  # the time was up: decayed to (about) lr x lr_min_ratio


@pytest.mark.parametrize("min_eval_interval, expected", [(0, [1, 2, 3, 4]), (2, [3, 4])])
def test_min_eval_interval_skips_that_many_intervals_as_upstream(small_dataset, tmp_path, monkeypatch,
                                                                 min_eval_interval, expected):
    # upstream: `if _iter_id >= min_eval_interval` with _iter_id = 0, 1, ...: the first evaluation comes after
    # min_eval_interval + 1 intervals (we evaluated one interval early)
    seen = []
    monkeypatch.setattr(Trainer, "evaluate", lambda self: seen.append(self.epoch))
    run(tiny_cfg(small_dataset, tmp_path, epochs=4, eval_interval=1, min_eval_interval=min_eval_interval))
    assert seen == expected


def test_aggregated_voting_pools_every_evaluation_of_the_run(small_dataset, tmp_path):
    trainer = run(tiny_cfg(small_dataset, tmp_path, epochs=2, eval_interval=1, aggregated_voting=True,
                           arch=dict(TINY_ARCH, halt_max_steps=1)))
    evals = sorted((trainer.run_dir / "eval").iterdir(), key=lambda p: int(p.name[5:]))
    metrics = [json.loads((e / "metrics.json").read_text()) for e in evals]
    assert [m["aggregated_evaluations"] for m in metrics] == [1, 2]
    votes = [sum(c["votes"] for t in json.loads((e / "predictions.json").read_text())["tasks"].values()
                 for entry in t for c in entry["candidates"]) for e in evals]
    assert votes[1] > votes[0]  # the second evaluation's candidates carry the first one's votes too
    state = torch.load(latest_checkpoint(trainer.run_dir) / "train_state.pt", weights_only=False)
    assert state["vote_pool"]["evaluations"] == 2  # resume continues the pool
