"""Checkpoints: every upstream key spelling, fork sidecars and LoRA keys, our format, trunk export, `trm info`."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import tiny_arch

import trm_core
from trm_core import predict
from trm_core.checkpoint import (CheckpointError, canonical_key, checkpoint_info, export_trunk, infer_arch,
                                 load_checkpoint, main_export, main_info, read_checkpoint, save_checkpoint)
from trm_core.config import ArchConfig
from trm_core.lora import LoraConfig, apply_lora, lora_parameters
from trm_core.model import build_model

# What the tiny model needs beyond its shapes (the test's "upstream ARC" settings).
TINY = dict(puzzle_emb_len=1, L_cycles=1, H_cycles=1, num_heads=2, halt_max_steps=2, seq_len=16,
            forward_dtype="float32")


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = build_model(tiny_arch(**{**TINY, **overrides}))
    with torch.no_grad():  # a trained-looking table and q_head, so that a wrong row or key would show
        model.inner.puzzle_emb.weights.normal_()
        model.inner.q_head.weight.normal_()
    return model


def outputs(model, ids=(1, 2, 7)):
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 12, (len(ids), 16), generator=g)
    return predict(model, inputs, torch.tensor(ids))["logits"]


def write_upstream(path, model, prefix):
    """An upstream `step_N` file: torch.save of a flat state_dict with the given key spelling."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    return path


def test_canonical_key_maps_every_spelling_to_inner():
    for key in ("_orig_mod.model.inner.lm_head.weight", "model.inner.lm_head.weight",
                "_orig_mod.inner.lm_head.weight", "inner.lm_head.weight"):
        assert canonical_key(key) == "inner.lm_head.weight"
    assert canonical_key("_orig_mod.model.inner.q_head._lora_B") == "inner.q_head.lora_B"


@pytest.mark.parametrize("prefix", ["_orig_mod.model.", "model.", ""])
def test_each_upstream_key_spelling_loads_to_identical_outputs(tmp_path, prefix):
    model = tiny_model()
    path = write_upstream(tmp_path / "step_100", model, prefix)
    loaded = trm_core.load_checkpoint(path, **TINY)
    assert not loaded.training
    torch.testing.assert_close(outputs(loaded), outputs(model), rtol=0, atol=0)
    assert read_checkpoint(path).format == "upstream"


def test_foreign_checkpoint_without_puzzle_emb_len_names_it_and_the_known_values(tmp_path):
    path = write_upstream(tmp_path / "step_1", tiny_model(), "_orig_mod.model.")
    settings = {k: v for k, v in TINY.items() if k != "puzzle_emb_len"}
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, **settings)
    msg = str(e.value)
    assert "puzzle_emb_len" in msg and "puzzle_emb_len=16" in msg
    # the fork's published step_723914 is a replication of upstream: 16, not the fork's yaml default 1
    assert "step_723914" in msg and "1 only for models trained from scratch" in msg
    assert "L_cycles" not in msg.split("Pass them")[0]  # only what is missing is listed


def test_foreign_checkpoint_with_nothing_given_lists_every_missing_setting(tmp_path):
    path = write_upstream(tmp_path / "step_1", tiny_model(), "")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    for name in ("puzzle_emb_len", "L_cycles", "H_cycles", "num_heads", "halt_max_steps"):
        assert name in str(e.value)


def test_wrong_puzzle_emb_len_is_caught_when_the_weights_record_positions(tmp_path):
    model = tiny_model(pos_encodings="learned", puzzle_emb_len=4)  # 16 + 4 learned positions
    path = write_upstream(tmp_path / "step_1", model, "model.")
    settings = {k: v for k, v in TINY.items() if k != "seq_len"}  # seq_len comes from the position table
    with pytest.raises(CheckpointError, match="puzzle_emb_len=1 leaves 19 of the 20 positions"):
        load_checkpoint(path, **settings)
    loaded = load_checkpoint(path, **{**settings, "puzzle_emb_len": 4})
    assert loaded.config.seq_len == 16 and loaded.config.pos_encodings == "learned"
    torch.testing.assert_close(outputs(loaded), outputs(model), rtol=0, atol=0)


def fork_sidecar(folder, **arch):
    section = {"name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
               "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
               "hidden_size": 32, "num_heads": 2, "L_layers": 1, "H_layers": 0, "expansion": 4,
               "puzzle_emb_ndim": "${.hidden_size}", "pos_encodings": "rope", "forward_dtype": "bfloat16",
               "H_cycles": 1, "L_cycles": 1, "puzzle_emb_len": 1, "halt_max_steps": 2, "halt_exploration_prob": 0.1,
               "halt_max_steps_eval": None, "lora_rank": 0, "lora_alpha": 1.0, "causal": False}
    section.update(arch)
    (folder / "all_config.yaml").write_text(yaml.safe_dump(
        {"arch": section, "puzzle_emb_reinit_strategy": "mean", "lr": 1e-4}))


def test_fork_layout_with_all_config_yaml_loads_without_arguments(tmp_path):
    model = tiny_model()
    path = write_upstream(tmp_path / "run" / "step_7", model, "_orig_mod.model.")
    fork_sidecar(tmp_path / "run")
    contents = read_checkpoint(path)
    assert contents.format == "fork" and contents.arch["puzzle_emb_len"] == 1
    assert "forward_dtype" in contents.ignored_config_keys and "causal" in contents.ignored_config_keys
    loaded = load_checkpoint(path, seq_len=16, forward_dtype="float32")
    torch.testing.assert_close(outputs(loaded), outputs(model), rtol=0, atol=0)


def test_caller_value_contradicting_the_sidecar_is_refused(tmp_path):
    path = write_upstream(tmp_path / "run" / "step_7", tiny_model(), "")
    fork_sidecar(tmp_path / "run")
    with pytest.raises(CheckpointError, match="puzzle_emb_len=16 but .*all_config.yaml records puzzle_emb_len=1"):
        load_checkpoint(path, seq_len=16, puzzle_emb_len=16)


def test_fork_lora_checkpoint_loads_its_adapters(tmp_path):
    model = apply_lora(tiny_model(), LoraConfig(rank=1, alpha=16.0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    fork_sd = {"_orig_mod.model." + k.replace(".lora_A", "._lora_A").replace(".lora_B", "._lora_B"): v
               for k, v in model.state_dict().items()}
    (tmp_path / "run").mkdir()
    torch.save(fork_sd, tmp_path / "run" / "step_3")
    fork_sidecar(tmp_path / "run", lora_rank=1, lora_alpha=16, lora_dropout=0.0)
    loaded = load_checkpoint(tmp_path / "run" / "step_3", seq_len=16, forward_dtype="float32")
    assert loaded.lora_config.rank == 1 and loaded.lora_config.alpha == 16.0
    torch.testing.assert_close(outputs(loaded), outputs(model), rtol=0, atol=1e-6)

    (tmp_path / "run" / "all_config.yaml").unlink()  # without the sidecar, alpha must be given
    with pytest.raises(CheckpointError, match="lora_alpha"):
        load_checkpoint(tmp_path / "run" / "step_3", **TINY)
    again = load_checkpoint(tmp_path / "run" / "step_3", lora_alpha=16, **TINY)
    torch.testing.assert_close(outputs(again), outputs(model), rtol=0, atol=1e-6)


def test_our_format_round_trips_arch_and_identifiers_hash(tmp_path):
    ids_file = tmp_path / "identifiers.json"
    ids_file.write_text(json.dumps(["<blank>"] + [f"t{i}" for i in range(1, 8)]))  # one per table row
    model = tiny_model()
    path = save_checkpoint(tmp_path / "model.pt", model, identifiers_path=ids_file)
    contents = read_checkpoint(path)
    assert contents.format == "trm_core" and contents.kind == "full"
    assert ArchConfig(**contents.arch) == model.config
    assert len(contents.identifiers_sha256) == 64
    loaded = load_checkpoint(path, identifiers_path=ids_file)  # nothing to repeat
    assert loaded.config == model.config
    torch.testing.assert_close(outputs(loaded), outputs(model), rtol=0, atol=0)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(["<blank>"] + [f"u{i}" for i in range(1, 8)]))  # same size, other puzzles
    with pytest.raises(CheckpointError, match="not the identifiers file this model was trained with"):
        load_checkpoint(path, identifiers_path=other)


def test_a_puzzle_table_that_does_not_fit_the_datasets_identifiers_is_refused_naming_both_sizes(tmp_path):
    path = write_upstream(tmp_path / "step_1", tiny_model(), "_orig_mod.model.")  # upstream: no hash recorded
    ids_file = tmp_path / "identifiers.json"
    ids_file.write_text(json.dumps(["<blank>"] + [f"t{i}" for i in range(1, 1200)]))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, identifiers_path=ids_file, **TINY)
    msg = str(e.value)
    assert "has 8 rows" in msg and "1,200 puzzle identifiers" in msg
    assert "trm build-data" in msg and "post-train" in msg  # the two fixes
    # post-training re-initialises a table of another size (mean), unless asked to keep it
    assert load_checkpoint(path, num_puzzle_identifiers=1200, **TINY).inner.puzzle_emb.weights.shape[0] == 1200
    with pytest.raises(CheckpointError, match="has 8 rows but the dataset has 1,200"):
        load_checkpoint(path, num_puzzle_identifiers=1200, puzzle_emb_reinit="keep", **TINY)
    kept = load_checkpoint(path, num_puzzle_identifiers=8, puzzle_emb_reinit="keep", **TINY)
    torch.testing.assert_close(outputs(kept), outputs(tiny_model()), rtol=0, atol=0)


def test_fork_sidecar_without_lora_alpha_takes_the_forks_default_alpha_not_the_rank(tmp_path):
    model = apply_lora(tiny_model(), LoraConfig(rank=2, alpha=1.0))
    fork_sd = {"_orig_mod.model." + k.replace(".lora_A", "._lora_A").replace(".lora_B", "._lora_B"): v
               for k, v in model.state_dict().items()}
    (tmp_path / "run").mkdir()
    torch.save(fork_sd, tmp_path / "run" / "step_3")
    fork_sidecar(tmp_path / "run", lora_rank=2)
    raw = yaml.safe_load((tmp_path / "run" / "all_config.yaml").read_text())
    del raw["arch"]["lora_alpha"]  # the fork's yaml did not set it: its trm.py default 1.0 applied
    (tmp_path / "run" / "all_config.yaml").write_text(yaml.safe_dump(raw))
    loaded = load_checkpoint(tmp_path / "run" / "step_3", seq_len=16)
    assert loaded.lora_config.alpha == 1.0 and loaded.lora_config.rank == 2


def test_our_lora_checkpoint_and_adapter_file_round_trip(tmp_path):
    from trm_core.lora import load_adapter_state_dict

    model = apply_lora(tiny_model(), LoraConfig(rank=2, alpha=4.0))
    with torch.no_grad():
        for p in lora_parameters(model):
            p.normal_(std=0.05)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "full.pt", model))
    assert loaded.lora_config == model.lora_config
    torch.testing.assert_close(outputs(loaded), outputs(model), rtol=0, atol=1e-6)

    adapters = save_checkpoint(tmp_path / "adapter.pt", model, kind="adapter")
    with pytest.raises(CheckpointError, match="adapter-only"):
        load_checkpoint(adapters)
    base = apply_lora(tiny_model(), LoraConfig(rank=2, alpha=4.0))
    load_adapter_state_dict(base, read_checkpoint(adapters).state_dict)
    torch.testing.assert_close(outputs(base), outputs(model), rtol=0, atol=1e-6)


def test_caller_value_contradicting_our_stored_value_raises_but_runtime_settings_override(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", tiny_model())
    with pytest.raises(CheckpointError, match="L_cycles=4 .*records L_cycles=1"):
        load_checkpoint(path, L_cycles=4)
    with pytest.raises(CheckpointError, match="hidden_size=64 but the weights have hidden_size=32"):
        load_checkpoint(path, hidden_size=64)
    loaded = load_checkpoint(path, halt_max_steps_eval=5, L_cycles=1)
    assert loaded.config.eval_steps == 5


def test_unknown_arch_setting_is_refused_with_the_known_names(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", tiny_model())
    with pytest.raises(CheckpointError, match="unknown arch setting.*L_cycle'.*L_cycles"):
        load_checkpoint(path, L_cycle=4)


@pytest.mark.parametrize("strategy", ["mean", "normal"])
def test_puzzle_table_of_another_size_is_reinitialised_by_strategy(tmp_path, strategy):
    model = tiny_model()
    old = model.inner.puzzle_emb.weights
    path = save_checkpoint(tmp_path / "model.pt", model)
    loaded = load_checkpoint(path, num_puzzle_identifiers=50, puzzle_emb_reinit=strategy)
    new = loaded.inner.puzzle_emb.weights
    assert new.shape == (50, old.shape[1]) and loaded.config.num_puzzle_identifiers == 50
    if strategy == "mean":
        assert torch.allclose(new, old.mean(0).expand(50, -1))
    else:
        assert not torch.allclose(new[0], new[1])
        torch.testing.assert_close(new.mean(0), old.mean(0), atol=0.6, rtol=0)
    with pytest.raises(CheckpointError, match="mean.*normal"):
        load_checkpoint(path, num_puzzle_identifiers=50, puzzle_emb_reinit="zeros")


def test_strict_loading_lists_missing_and_unexpected_keys(tmp_path):
    sd = {"model." + k: v for k, v in tiny_model().state_dict().items()}
    sd.pop("model.inner.q_head.bias")
    sd["model.inner.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "step_1")
    with pytest.raises(CheckpointError, match=r"1 missing: \['inner.q_head.bias'\].*1 unexpected"):
        load_checkpoint(tmp_path / "step_1", **TINY)


def test_truncated_or_corrupt_file_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", tiny_model())
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    for name in ("cut.pt", "junk.pt"):
        with pytest.raises(CheckpointError, match=name):
            read_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        read_checkpoint(tmp_path / "absent.pt")


def test_infer_arch_reads_the_shape_settings():
    model = tiny_model()
    got = infer_arch(model.state_dict())
    assert got == {"vocab_size": 12, "hidden_size": 32, "puzzle_emb_ndim": 32, "num_puzzle_identifiers": 8,
                   "L_layers": 1, "mlp_t": False, "expansion": 4.0}


def test_trunk_export_of_the_arc_model_is_small_and_loads_with_new_puzzle_ids(tmp_path):
    # The ARC model (hidden 512, 8 heads, 2 layers, expansion 4) with a large table: 100k x 512 fp32 = 205 MB.
    arc = ArchConfig(num_puzzle_identifiers=100_000, forward_dtype="float32", seq_len=16)
    model = build_model(arc)
    with torch.no_grad():
        model.inner.puzzle_emb.weights[:, 0] = torch.arange(100_000, dtype=torch.float32) / 1e5
    src = write_upstream(tmp_path / "ckpt" / "step_1", model, "_orig_mod.model.")
    del model
    out = export_trunk(src, tmp_path / "trunk", puzzle_emb_len=16, L_cycles=4, H_cycles=3, num_heads=8,
                       halt_max_steps=16, seq_len=16)
    size = out.stat().st_size
    print(f"\ntrunk export of the ARC model: {size / 1e6:.2f} MB (source {src.stat().st_size / 1e6:.0f} MB)")
    assert size <= 30e6 < src.stat().st_size
    assert (tmp_path / "trunk" / "config.yaml").is_file() and "load_checkpoint" in \
        (tmp_path / "trunk" / "README.md").read_text()
    contents = read_checkpoint(out)
    assert contents.kind == "trunk" and contents.state_dict["inner.puzzle_emb.weights"].shape == (1, 512)
    loaded = load_checkpoint(tmp_path / "trunk", num_puzzle_identifiers=3)  # a folder with model.pt works too
    table = loaded.inner.puzzle_emb.weights
    assert table.shape == (3, 512) and loaded.config.puzzle_emb_len == 16 and loaded.config.L_cycles == 4
    torch.testing.assert_close(table[:, 0], torch.full((3,), (100_000 - 1) / 2e5))


def test_trm_info_reports_format_keys_and_missing_settings(tmp_path, capsys):
    path = write_upstream(tmp_path / "step_9", tiny_model(), "_orig_mod.model.")
    assert main_info([str(path)]) == 0
    text = capsys.readouterr().out
    assert "upstream checkpoint" in text and "'_orig_mod.model.inner.'" in text and "(8, 32)" in text
    assert "MISSING" in text and "puzzle_emb_len" in text
    assert main_info([str(path), "--json", "--arch", "puzzle_emb_len=1", "L_cycles=1", "H_cycles=1",
                      "num_heads=2", "halt_max_steps=2", "seq_len=16"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["missing_settings"] == {} and info["resolved_arch"]["hidden_size"] == 32
    assert checkpoint_info(path)["inferred_arch"]["L_layers"] == 1


def test_trm_export_cli_writes_the_export_and_errors_in_one_line(tmp_path, capsys):
    path = write_upstream(tmp_path / "step_9", tiny_model(), "model.")
    args = [f"{k}={v}" for k, v in TINY.items()]
    assert main_export([str(path), str(tmp_path / "out"), "--arch", *args]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "out" / "model.pt").config.puzzle_emb_len == 1
    assert main_export([str(path), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "puzzle_emb_len" in err and "Traceback" not in err
    assert main_info([str(tmp_path / "nothing.pt")]) == 2
