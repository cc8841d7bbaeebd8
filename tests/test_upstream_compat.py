"""Against upstream's own outputs (tests/fixtures/upstream, produced by running upstream's code): the builder
writes the same bytes, and an upstream fp32 checkpoint gives the same logits and q values."""

from pathlib import Path

import pytest

from trm_core.data.build import main as build_main

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
BUILT = FIXTURES / "built-minitrain-minieval-aug8"


def test_build_data_reproduces_upstreams_builder_output_byte_for_byte(tmp_path):
    out = tmp_path / "built"
    assert build_main(["--input-file-prefix", str(FIXTURES / "input" / "arc-agi"), "--output-dir", str(out),
                       "--subsets", "minitrain", "minieval", "--test-set-name", "minieval", "--num-aug", "8",
                       "--no-progress"]) == 0
    expected = sorted(p.relative_to(BUILT) for p in BUILT.rglob("*") if p.is_file())
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert written == expected
    for rel in expected:
        assert (out / rel).read_bytes() == (BUILT / rel).read_bytes(), rel


@pytest.mark.parametrize("chunk_rows", ["3", "100000"])
def test_upstream_build_does_not_depend_on_chunk_size(tmp_path, chunk_rows):
    out = tmp_path / "built"
    assert build_main(["--input-file-prefix", str(FIXTURES / "input" / "arc-agi"), "--output-dir", str(out),
                       "--subsets", "minitrain", "minieval", "--test-set-name", "minieval", "--num-aug", "8",
                       "--chunk-rows", chunk_rows, "--no-progress"]) == 0
    for name in ("train/all__inputs.npy", "train/all__labels.npy"):
        assert (out / name).read_bytes() == (BUILT / name).read_bytes()


MODEL = FIXTURES / "model-fp32-tiny"


def _upstream_fp32_model(**extra):
    import json

    import trm_core

    arch = {k: v for k, v in json.loads((MODEL / "config.json").read_text())["arch"].items()}
    return trm_core.load_checkpoint(MODEL / "step_40", **(arch | extra))


@pytest.mark.parametrize("forward_dtype", ["float32", "auto"])  # auto is fp32 on CPU
def test_upstream_fp32_checkpoint_reproduces_its_logits_and_q_to_float32_rounding(forward_dtype):
    import torch

    from trm_core.model import predict

    model = _upstream_fp32_model(forward_dtype=forward_dtype)
    ref = torch.load(MODEL / "reference_outputs.pt", weights_only=True)
    for steps, expected in ref["outputs_after_steps"].items():
        out = predict(model, ref["inputs"], ref["puzzle_identifiers"], steps=steps)
        # bf16-stored H_init/L_init were off by ~4e-2 after 3 steps; float32 rounding is ~1e-6
        torch.testing.assert_close(out["logits"], expected["logits"], rtol=1e-5, atol=2e-5)
        torch.testing.assert_close(out["q_halt_logits"], expected["q_halt_logits"], rtol=1e-5, atol=2e-5)


def test_h_init_and_l_init_keep_the_files_dtype_on_load():
    import torch

    from trm_core.config import ArchConfig
    from trm_core.model import build_model

    model = _upstream_fp32_model()
    assert model.inner.H_init.dtype == model.inner.L_init.dtype == torch.float32
    fresh = build_model(ArchConfig(hidden_size=32, num_heads=2, puzzle_emb_ndim=32, puzzle_emb_len=1))  # auto
    assert fresh.inner.H_init.dtype == torch.bfloat16  # upstream's default forward_dtype
    sd = {k: v.float() if k.endswith("_init") else v for k, v in fresh.state_dict().items()}
    sd["inner.H_init"] = torch.randn(32)
    fresh.load_state_dict(sd)
    assert fresh.inner.H_init.dtype == torch.float32 and torch.equal(fresh.inner.H_init, sd["inner.H_init"])
    assert "inner.H_init" in dict(fresh.named_buffers())  # still a registered, persistent buffer
    explicit = build_model(ArchConfig(hidden_size=32, num_heads=2, puzzle_emb_ndim=32, puzzle_emb_len=1,
                                      forward_dtype="float32"))
    assert explicit.inner.H_init.dtype == torch.float32  # as upstream: created in forward_dtype
