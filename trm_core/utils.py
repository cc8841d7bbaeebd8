"""Small shared helpers: atomic file writes, seeding, dtype resolution, a dependency-free progress bar."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


class OutputPathError(OSError):
    """An output file or folder that cannot be written; the message names the path and the reason."""

    def __init__(self, err: int | None, message: str) -> None:
        super().__init__(message)  # one argument: str() is the message alone
        self.errno = err


def _why_not_writable(path: Path, error: OSError | None = None) -> str:
    """The reason a folder cannot be created or written, in words (which ancestor is a file, read-only, ...)."""
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    if error is not None:
        if error.errno == errno.EROFS:
            return "the file system is read-only"
        if error.errno in (errno.EACCES, errno.EPERM):
            return "permission denied (a read-only folder?)"
        if error.errno == errno.ENOSPC:
            return "no space left on the device"
        return error.strerror or str(error)
    return "not writable"


def prepare_output_dir(path: str | Path) -> Path:
    """Create `path` (and parents) and check that a file can be written in it; raises OutputPathError naming
    the path and the reason (a parent is a file, permission denied, read-only file system, disk full)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".trm-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputPathError(e.errno, f"{path}: cannot write output there: {_why_not_writable(path, e)}") from None
    return path


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], Any]) -> Path:
    """Write a file atomically: `write(f)` into a temp file in the same folder, fsync, then `os.replace`.

    A crash (or SIGKILL) mid-write leaves the previous file intact, never a truncated one. An unusable path
    (a folder there, a parent that is a file, a read-only folder) raises OutputPathError naming it.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(errno.EISDIR, f"{path}: cannot write this file: a folder has that name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputPathError(e.errno, f"{path}: cannot write this file: {_why_not_writable(path.parent, e)}") \
            from None
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would have
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch  # here, not at the top: commands that never touch a tensor start without torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (checkpoints and wheels can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) from one integer."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """Map a config dtype name to a torch dtype; "auto" is bfloat16 on CUDA and float32 elsewhere."""
    import torch

    device = torch.device(device)
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
            "float64": torch.float64}[name]


def default_device() -> torch.device:
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


class Progress:
    """A minimal progress bar on stderr with rate and time left (no tqdm dependency).

    Prints in place on a TTY; elsewhere (logs, CI) one line every `log_every_s` seconds.
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", enabled: bool = True,
                 log_every_s: float = 10.0, stream=None) -> None:
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.n, self.start, self.last_print, self.printed_n = 0, time.perf_counter(), 0.0, -1
        self.log_every_s = log_every_s if not self.tty else 0.2
        self.postfix = ""

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if self.enabled and (now - self.last_print >= self.log_every_s or (self.total and self.n >= self.total)):
            self.last_print = now
            self._print(now)

    def _print(self, now: float) -> None:
        self.printed_n = self.n
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        if self.total:
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            text = (f"{self.desc} {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) "
                    f"{rate:.2f} {self.unit}/s, {format_seconds(elapsed)} elapsed, {format_seconds(left)} left")
        else:
            text = f"{self.desc} {self.n} {self.unit} {rate:.2f} {self.unit}/s, {format_seconds(elapsed)} elapsed"
        if self.postfix:
            text += f" | {self.postfix}"
        self.stream.write(("\r" + text + "\033[K") if self.tty else (text + "\n"))
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.printed_n != self.n:  # the last update may already have printed the final state
            self._print(time.perf_counter())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def format_seconds(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def weights_only_refusal(error: BaseException) -> tuple[bool, str]:
    """(is a refused Python object, short reason) for an exception of `torch.load(..., weights_only=True)`.

    torch's own message suggests re-running with weights_only=False, which would run any code planted in the
    file: only the unpickler's reason is kept ("Unsupported global: GLOBAL posix.system ...")."""
    import re

    text = str(error)
    m = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\n\n|\. Please use|$)", text, re.S)
    reason = " ".join((m.group(1) if m else text.strip().splitlines()[0] if text.strip() else "").split())
    refused = "Unsupported global" in text or "Unsupported class" in text
    return refused, (reason or type(error).__name__)[:200]
