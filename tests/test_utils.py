"""Shared helpers: atomic writes and the progress bar."""

from __future__ import annotations

import io

import pytest

from trm_core.utils import Progress, atomic_write, atomic_write_text


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_text(path, "old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


def test_progress_prints_the_final_state_once_when_not_a_tty():
    out = io.StringIO()
    bar = Progress(3, desc="x", stream=out, log_every_s=1e9)
    for _ in range(3):
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("x 3/3 (100%)")


def test_atomic_write_gives_the_file_the_usual_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "submission.json", "{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
