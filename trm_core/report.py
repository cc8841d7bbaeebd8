"""A visual report of an evaluation run: one self-contained HTML page in ARC's colours.

    trm report runs/arc2_eval                 # writes runs/arc2_eval/report.html
    trm report runs/kaggle_cpu                # a trm kaggle output folder: its eval/, with the learning curves
    trm report runs/arc2_eval --top 5 --only-unsolved --out /tmp/unsolved.html

For each task and test input the page shows the test input, the top candidates with their vote counts and mean
sigmoid(q_halt) (the two submitted attempts first), and the true output when it is known; a candidate equal to
the truth is framed in green. When a likelihood rule chose the attempts (`trm eval --select poe`, see
`trm_core.rescore`) each caption also gives the candidate's log-probability summed over the augmented views and,
where the rule moved it, its rank by votes. It reads `predictions.json` and `metrics.json` written by `trm eval`. Grids are
inline PNG images (written with zlib, no extra dependency) drawn with the standard ARC palette and grid lines,
so the file opens anywhere, offline, and stays small.
"""

from __future__ import annotations

import argparse
import base64
import html
import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trm_core.jsonio import check_metrics, check_predictions, read_json
from trm_core.utils import atomic_write_text

# The ARC palette (arcprize.org / the ARC testing interface), indexed by colour 0..9.
ARC_COLOURS = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
               "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"]
_LINE = "#555555"  # grid lines, palette index 10


def grid_png(grid: Any, cell: int = 12) -> bytes:
    """PNG bytes of an ARC grid: `cell` pixels per cell including a 1-pixel grid line."""
    g = np.asarray(grid, dtype=np.uint8)
    h, w = g.shape
    img = np.full((h * cell + 1, w * cell + 1), 10, dtype=np.uint8)  # start as all grid line
    body = np.kron(g, np.ones((cell, cell), dtype=np.uint8))  # (h*cell, w*cell)
    inside = np.ones((h * cell, w * cell), dtype=bool)
    inside[::cell, :] = False
    inside[:, ::cell] = False
    img[:-1, :-1] = np.where(inside, body, 10)
    palette = b"".join(bytes.fromhex(c[1:]) for c in ARC_COLOURS + [_LINE])
    raw = b"".join(b"\x00" + row.tobytes() for row in img)  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # 8-bit palette image (colour type 3).
    header = struct.pack(">IIBBBBB", img.shape[1], img.shape[0], 8, 3, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _img(grid: Any, title: str) -> str:
    g = np.asarray(grid)
    cell = 12 if max(g.shape) <= 15 else 7  # big grids drawn finer so a row of them fits the page
    data = base64.b64encode(grid_png(g, cell)).decode()
    return f'<img src="data:image/png;base64,{data}" title="{html.escape(title)} ({g.shape[0]}x{g.shape[1]})">'


def _figure(grid: Any, caption: str, cls: str = "") -> str:
    if grid is None or not len(grid):
        body = '<div class="none">none</div>'
    else:
        body = _img(grid, caption)
    return f'<figure class="{cls}">{body}<figcaption>{html.escape(caption)}</figcaption></figure>'


_CSS = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.05em; margin: 1.2em 0 .3em; }
table.metrics td { padding: 0 1em 0 0; }
.test { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 10px; padding: 6px;
        border-left: 4px solid #ccc; margin-bottom: 6px; background: #fff; }
.test.solved { border-left-color: #2ECC40; } .test.unsolved { border-left-color: #FF4136; }
figure { margin: 0; text-align: center; padding: 3px; border: 3px solid transparent; }
figure.correct { border-color: #2ECC40; } figure.truth { background: #eef; }
figcaption { font-size: 12px; color: #555; }
img { image-rendering: pixelated; display: block; margin: auto; }
.none { width: 60px; height: 40px; line-height: 40px; color: #999; border: 1px dashed #bbb; }
.sep { width: 1px; align-self: stretch; background: #ddd; }
"""


def _caption(r: int, c: dict) -> str:
    """`#1: 12 votes, q 0.83` and, for a rescored candidate, `, log p -3.2 (8 views), votes #2`."""
    text = f"#{r + 1}: {c['votes']} votes, q {c['mean_q']:.2f}"
    if "logprob" in c:
        lp = c["logprob"]
        text += f", log p {'-inf' if lp is None else format(lp, '.1f')} ({c.get('views', '?')} views)"
        vote_rank = (c.get("ranks") or {}).get("votes")
        if vote_rank is not None and vote_rank != r + 1:
            text += f", votes #{vote_rank}"
    return text


def render_html(predictions: dict, metrics: dict | None = None, *, top: int = 3, only_unsolved: bool = False,
                title: str = "trm_core evaluation", curves_png: bytes | None = None) -> str:
    """The report page for `predictions.json`'s content (and optionally `metrics.json`'s and a learning-curve
    PNG, shown under the metrics)."""
    metrics = metrics or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    shown = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    if shown:
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{v:.4f}</td></tr>" if isinstance(v, float)
                       else f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in shown.items())
        parts.append(f"<table class='metrics'>{rows}</table>")
    if curves_png:
        parts.append(f"<p><img alt='learning curves' src='data:image/png;base64,"
                     f"{base64.b64encode(curves_png).decode()}'></p>")
    select = predictions.get("select", "votes")
    how = "votes" if select == "votes" else (
        f"{select} (likelihood over augmented views of the top {(predictions.get('selection') or {}).get('candidates', '?')} "
        "candidates by votes; captions give each one's summed log-probability and its rank by votes)")
    parts.append(f"<p>Ranking: {html.escape(str(predictions.get('rank_by', '?')))}; attempts chosen by "
                 f"{html.escape(how)}; the first two candidates are the submitted attempts. Green frame: equals the "
                 "true output.</p>")
    for task_id, tests in predictions["tasks"].items():
        blocks = []
        for i, test in enumerate(tests):
            truth = test.get("truth")
            cands = test["candidates"][:top]
            right = [truth is not None and c["grid"] == truth for c in cands]
            solved = any(right[:2])
            if only_unsolved and solved:
                continue
            status = "" if truth is None else (" solved" if solved else " unsolved")
            figs = [_figure(test["input"], f"test {i} input"), '<div class="sep"></div>']
            figs += [_figure(c["grid"], _caption(r, c), "correct" if ok else "")
                     for r, (c, ok) in enumerate(zip(cands, right))]
            if not cands:
                figs.append(_figure(None, "no prediction (fallback submitted)"))
            if truth is not None:
                figs += ['<div class="sep"></div>', _figure(truth, "truth", "truth")]
            blocks.append(f'<div class="test{status}">{"".join(figs)}</div>')
        if blocks:
            parts.append(f"<h2 id='{html.escape(task_id)}'>{html.escape(task_id)}</h2>" + "".join(blocks))
    parts.append("</body></html>")
    return "".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None, *, top: int = 3,
                 only_unsolved: bool = False) -> Path:
    """Render `run_dir/predictions.json` (+ metrics.json and learning_curves.png if present) to `out` (default
    run_dir/report.html). `run_dir` is a `trm eval` output folder, or a `trm kaggle` one (its eval/ is read)."""
    run_dir = Path(run_dir)
    folder = run_dir / "eval" if not (run_dir / "predictions.json").exists() else run_dir
    pred_path = folder / "predictions.json"
    if not pred_path.exists():
        raise FileNotFoundError(f"{run_dir / 'predictions.json'} not found: run `trm eval --output-dir {run_dir}` "
                                "first (or `trm kaggle`, which writes eval/predictions.json when time allows)")
    # The input boundary: limits, then the shape (every grid rectangular with colours 0..9, votes and q numbers).
    predictions = check_predictions(read_json(pred_path, tasks_at=("tasks",)), pred_path)
    metrics_path = folder / "metrics.json"
    metrics = check_metrics(read_json(metrics_path, tasks_at=None), metrics_path) if metrics_path.exists() else None
    curves = folder / "learning_curves.png"
    page = render_html(predictions, metrics, top=top, only_unsolved=only_unsolved, title=f"trm eval: {run_dir}",
                       curves_png=curves.read_bytes() if curves.is_file() else None)
    return atomic_write_text(Path(out) if out else run_dir / "report.html", page)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="trm report", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Example:\n  trm report runs/arc2_eval\n\nWrite RUN_DIR/report.html: each test input, the top "
                    "candidates with their votes, and the truth when known, in ARC colours.")
    p.add_argument("run_dir", help="an output folder of `trm eval` (holds predictions.json) or of `trm kaggle`")
    p.add_argument("--out", default=None, help="default: RUN_DIR/report.html")
    p.add_argument("--top", type=int, default=3, help="candidates shown per test input")
    p.add_argument("--only-unsolved", action="store_true", help="hide test inputs solved by attempt 1 or 2")
    args = p.parse_args(argv)
    # A missing or malformed predictions.json, or an unusable --out, is one line and exit 2 (trm_core.cli).
    path = write_report(args.run_dir, args.out, top=args.top, only_unsolved=args.only_unsolved)
    print(f"wrote {path}")
    return 0
