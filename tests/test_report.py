"""The HTML report (trm_core.report): ARC colours, candidates with votes, truth, one self-contained file."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib

import numpy as np
import pytest

from trm_core.report import ARC_COLOURS, grid_png, main, render_html, write_report

PREDICTIONS = {"rank_by": "votes_then_q", "tasks": {
    "solved1": [{"input": [[1, 2], [3, 4]], "truth": [[5]],
                 "candidates": [{"grid": [[6]], "votes": 9, "mean_q": 0.7},
                                {"grid": [[5]], "votes": 4, "mean_q": 0.2}]}],
    "missed2": [{"input": [[0]], "truth": [[1, 1]], "candidates": []}],
    "unknown3": [{"input": [[7]], "truth": None, "candidates": [{"grid": [[8, 9]], "votes": 1, "mean_q": 0.1}]}],
}}


def _decode_png(data: bytes) -> tuple[np.ndarray, list[str]]:
    """A minimal reader for the 8-bit palette PNGs grid_png writes: (pixels, palette as #RRGGBB)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + n
    w, h = struct.unpack(">II", chunks[b"IHDR"][:8])
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, w + 1)
    assert (raw[:, 0] == 0).all()
    pal = chunks[b"PLTE"]
    return raw[:, 1:], ["#" + pal[i:i + 3].hex().upper() for i in range(0, len(pal), 3)]


def test_grid_png_draws_each_cell_in_its_arc_colour():
    grid = np.arange(10).reshape(2, 5)
    pixels, palette = _decode_png(grid_png(grid, cell=4))
    assert palette[:10] == ARC_COLOURS
    assert pixels.shape == (2 * 4 + 1, 5 * 4 + 1)
    centres = pixels[2::4, 2::4]  # the middle pixel of every cell
    assert (centres == grid).all()


def test_report_shows_input_candidates_votes_and_truth():
    page = render_html(PREDICTIONS, {"kaggle_score": 0.5, "ARC/pass@2": 0.5})
    assert page.count("<img") == 4 + 2 + 2  # solved1: input, 2 candidates, truth; missed2: input, truth; unknown3: 2
    assert "9 votes, q 0.70" in page and "4 votes, q 0.20" in page
    assert page.count('class="correct"') == 1  # the candidate equal to the truth is framed
    assert 'class="test solved"' in page and 'class="test unsolved"' in page
    assert "no prediction (fallback submitted)" in page and "kaggle_score" in page
    assert "http" not in page  # self-contained: nothing to fetch


def test_only_unsolved_hides_solved_test_inputs():
    page = render_html(PREDICTIONS, only_unsolved=True)
    assert "solved1" not in page and "missed2" in page


def test_report_cli_writes_report_html(tmp_path, capsys):
    (tmp_path / "predictions.json").write_text(json.dumps(PREDICTIONS))
    assert main([str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    first = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    pixels, _ = _decode_png(base64.b64decode(first))
    assert pixels.shape[0] > 1
    assert "wrote" in capsys.readouterr().out


def test_report_of_a_folder_without_predictions_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="trm eval"):
        write_report(tmp_path)


def test_trm_report_opens_a_kaggle_output_folder_with_truth_and_learning_curves(tmp_path, capsys):
    """`trm report OUTPUT_DIR` of `trm kaggle`: its eval/ (written with the solutions it was given) and curves."""
    from test_kaggle import tiny_run

    from trm_core.kaggle import run_kaggle

    result = run_kaggle(tiny_run(tmp_path))
    assert result.status == "ok", result.errors
    assert main([str(result.output_dir)]) == 0
    page = (result.output_dir / "report.html").read_text()
    assert "truth" in page and "learning curves" in page and "ARC/pass@2" in page
    assert f"wrote {result.output_dir / 'report.html'}" in capsys.readouterr().out
