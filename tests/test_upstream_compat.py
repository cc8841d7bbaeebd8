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
