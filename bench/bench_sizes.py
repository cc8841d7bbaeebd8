"""Checkpoint and export sizes for the ARC-size model with ARC-AGI-2's puzzle table (1,191,730 x 512).

    python bench/bench_sizes.py                       # writes the full checkpoint to a temp dir if disk allows
    python bench/bench_sizes.py --table-rows 1000     # quick: small table, full size by arithmetic

Builds the ARC model (`configs/arch/trm.yaml`, canvas 30) with a `--table-rows` puzzle table, writes it with
`trm_core.checkpoint.save_checkpoint` (our format, what a training run's `model.pt` is) and exports the trunk
with `trm_core.checkpoint.export_trunk` (what a Kaggle dataset carries), and measures both files. When the table
is smaller than ARC-AGI-2's, or the disk lacks room, the full checkpoint's size is the measured file plus the
missing rows x 512 x 4 bytes (the table is an fp32 buffer; everything else is the same). `train_state.pt`
(written next to every run checkpoint for exact resume) is estimated: the model again plus AdamATan2's two fp32
moments per trainable weight (the sign-SGD puzzle optimizer keeps no state), plus an EMA copy with `ema=True`.

JSON rows (bench/results/sizes.json, schema in bench/_common.py):
    item, bytes, mb, how ("measured" | "measured + table arithmetic" | "arithmetic"), detail
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
import torch
from _common import finish, record

from trm_core.checkpoint import export_trunk, save_checkpoint
from trm_core.config import ArchConfig, load_yaml
from trm_core.model import build_model
from trm_core.train import CONFIG_DIR

ARC2_TABLE_ROWS = 1_191_730  # ARC-AGI-2 (training2 + evaluation2 + concept) at 1000 augmentations, incl. blank
COLUMNS = ["item", "mb", "bytes", "how", "detail"]


def _row(item: str, nbytes: int, how: str, detail: str = "") -> dict:
    return {"item": item, "bytes": int(nbytes), "mb": round(nbytes / 1e6, 1), "how": how, "detail": detail}


def measure(table_rows: int, workdir: Path) -> list[dict]:
    arch = load_yaml(CONFIG_DIR / "arch" / "trm.yaml")
    cfg = ArchConfig(**dict(arch, seq_len=900, num_puzzle_identifiers=table_rows))
    model = build_model(cfg)
    trunk = sum(p.numel() for p in model.parameters())
    row_bytes = cfg.puzzle_emb_ndim * 4
    missing = ARC2_TABLE_ROWS - table_rows

    full = save_checkpoint(workdir / "full" / "model.pt", model)
    full_bytes = full.stat().st_size
    how = "measured" if missing == 0 else "measured + table arithmetic"
    rows = [
        _row("trunk weights (fp32, in memory)", trunk * 4, "arithmetic", f"{trunk:,} trainable parameters"),
        _row("full checkpoint model.pt, ARC-AGI-2 table", full_bytes + missing * row_bytes, how,
             f"table {ARC2_TABLE_ROWS:,} x {cfg.puzzle_emb_ndim} fp32 = {ARC2_TABLE_ROWS * row_bytes / 1e9:.2f} GB"
             + (f"; file written with {table_rows:,} rows = {full_bytes / 1e6:.1f} MB" if missing else "")),
    ]
    export = export_trunk(full, workdir / "export")
    rows.append(_row("trunk export model.pt (trm export)", export.stat().st_size, "measured",
                     "trunk + one mean puzzle row; config.yaml and README.md beside it"))
    full_model = full_bytes + missing * row_bytes
    adam = 2 * trunk * 4
    rows.append(_row("train_state.pt (resume), ARC-AGI-2 table", full_model + adam, "arithmetic",
                     "model state + AdamATan2 exp_avg and exp_avg_sq; + trunk x 4 B with ema=True"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table-rows", type=int, default=ARC2_TABLE_ROWS,
                   help="puzzle table rows actually written (default: ARC-AGI-2's, if the disk has room)")
    p.add_argument("--workdir", default=None, help="where to write the files (default: a temp dir, removed after)")
    p.add_argument("--json", default=None, help="output path (default bench/results/sizes.json)")
    args = p.parse_args(argv)
    rec = record(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="trm_bench_sizes_"))
    workdir.mkdir(parents=True, exist_ok=True)
    table_rows = args.table_rows
    need = table_rows * 512 * 4 * 2  # the file plus headroom for the atomic write's temp file
    if shutil.disk_usage(workdir).free < need:
        print(f"not enough free disk for a {table_rows:,}-row table: writing 1,000 rows and adding the rest by "
              "arithmetic", file=sys.stderr)
        table_rows = 1000
    try:
        with torch.no_grad():
            rows = measure(min(table_rows, ARC2_TABLE_ROWS), workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    finish("sizes", rec, rows, COLUMNS, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
