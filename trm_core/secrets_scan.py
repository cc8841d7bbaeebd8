"""A content scan for credentials, run on every file before it leaves the machine (`trm hub push`, Kaggle staging).

What is looked for (bytes, so binary files such as pickles and zips are read too; a found token is never
printed, only its kind and the file):
- Hugging Face tokens `hf_...`, W&B keys (`wb_...`, or 40 hex characters next to `wandb` / `WANDB_API_KEY` /
  `api.wandb.ai`), Kaggle keys (`"key": "<32 hex>"` as in kaggle.json, `KAGGLE_KEY=...`, `KGAT_...` access
  tokens), GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), PyPI tokens (`pypi-...`),
  AWS access key ids, private keys (`-----BEGIN ... PRIVATE KEY-----`: SSH, PEM, PGP), and `password = ...` /
  `api_key: ...` style assignments (`.pypirc`, `.netrc`, env and config files).
Zip members (wheels, torch's zip checkpoints) are scanned after decompression as well, since a compressed
token does not show in the raw bytes.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

CHUNK = 1 << 20
OVERLAP = 512  # longer than any pattern's match, so a token split across two chunks is still found

GENERIC = "password or API key assignment"
_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _cases(*words: str) -> tuple[bytes, ...]:
    return tuple(sorted({v.encode() for w in words for v in (w, w.lower(), w.upper(), w.capitalize())}))


# (kind, anchors: a chunk holding none of them cannot match, so the regex is skipped (bytes `in` is ~100x
# faster than a regex on binary data), regex, whether the byte before a match must not be a letter or digit).
PATTERNS: tuple[tuple[str, tuple[bytes, ...], re.Pattern[bytes], bool], ...] = tuple(
    (kind, anchors, re.compile(rx), boundary) for kind, anchors, rx, boundary in (
        ("Hugging Face token", (b"hf_",), rb"hf_[A-Za-z0-9]{30,}", True),
        ("W&B API key", (b"wb_",), rb"wb_[A-Za-z0-9]{20,}", True),
        ("W&B API key", _cases("wandb"), rb"(?i)wandb[^\n]{0,80}?(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])", False),
        ("Kaggle API key", (b'"key"',), rb'"key"\s*:\s*"[0-9a-f]{32}"', False),
        ("Kaggle API key", (b"KAGGLE_KEY",), rb"KAGGLE_KEY\s*[=:]\s*['\"]?[0-9a-f]{32}", False),
        ("Kaggle access token", (b"KGAT_",), rb"KGAT_[A-Za-z0-9]{20,}", True),
        ("GitHub token", (b"gh",), rb"gh[opusr]_[A-Za-z0-9]{30,}", True),
        ("GitHub token", (b"github_pat_",), rb"github_pat_[A-Za-z0-9_]{30,}", True),
        ("PyPI token", (b"pypi-AgE",), rb"pypi-AgE[A-Za-z0-9_-]{30,}", True),
        ("AWS access key id", (b"AKIA", b"ASIA"), rb"A[KS]IA[A-Z0-9]{16}(?![A-Z0-9])", True),
        ("private key", (b"PRIVATE KEY",), rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", False),
        (GENERIC,
         _cases("passw", "passwd", "api_key", "api-key", "apikey", "secret_key", "secret-key", "access_token",
                "access-token", "auth_token", "auth-token"),
         rb"(?im)(?:^|[{,])[ \t]*[\"']?(?:password|passwd|api[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token)"
         rb"[\"']?"
         rb"[ \t]*[=:][ \t]*[\"']?[^\s\"'#()\[\]{}$<>]{8,}(?=[\s\"',]|$)", False),
        ("netrc password", (b"machine",),
         rb"machine\s+\S+\s+(?:login\s+\S+\s+)?password\s+\S{8,}", False),
    ))


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the scanned folder (zip members as `archive.whl!member`)
    kind: str


class SecretFoundError(ValueError):
    """Files hold credentials; the message names each file and the kind of token, never the token."""

    def __init__(self, findings: list[Finding], action: str = "refusing to upload") -> None:
        self.findings = findings
        shown = "; ".join(f"{f.path} ({f.kind})" for f in findings[:10])
        more = f" and {len(findings) - 10} more" if len(findings) > 10 else ""
        super().__init__(f"{action}: credentials found in {shown}{more}. Remove them (or the files) and try again; "
                         "rotate any token that may already have been shared")


SOURCE_SUFFIXES = (".py", ".pyi", ".pyx", ".pxd", ".c", ".h", ".cpp", ".hpp", ".cu", ".js", ".ts", ".sh")


def is_source(name: str) -> bool:
    """Program source, where `password = other_name` is code, not a credential: only token-shaped values count."""
    return name.lower().endswith(SOURCE_SUFFIXES)


def scan_bytes(data: bytes, source: bool = False) -> str | None:
    """The kind of the first credential found in `data`, or None. `source`: program text (see `is_source`)."""
    for kind, anchors, rx, boundary in PATTERNS:
        if (source and kind == GENERIC) or not any(a in data for a in anchors):
            continue
        for m in rx.finditer(data):
            if not boundary or m.start() == 0 or data[m.start() - 1] not in _ALNUM:
                return kind
    return None


def _scan_stream(f, source: bool = False) -> str | None:
    tail = b""
    while True:
        block = f.read(CHUNK)
        if not block:
            return None
        kind = scan_bytes(tail + block, source)
        if kind:
            return kind
        tail = block[-OVERLAP:]


def scan_file(path: str | Path) -> str | None:
    """The kind of the first credential in a file (its bytes, then its zip members if it is a zip), or None."""
    path = Path(path)
    with open(path, "rb") as f:
        kind = _scan_stream(f, is_source(path.name))
    if kind:
        return kind
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.compress_type == zipfile.ZIP_STORED or info.is_dir():
                        continue  # stored members were in the raw bytes already
                    with zf.open(info) as member:
                        kind = _scan_stream(member, is_source(info.filename))
                    if kind:
                        return f"{kind} in {info.filename}"
        except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError):
            return None  # not readable as a zip: its raw bytes were scanned
    return None


def scan_paths(root: str | Path, rels: Iterable[str]) -> list[Finding]:
    """Scan the files `rels` (paths relative to `root`); one Finding per file that holds a credential."""
    root = Path(root)
    found = []
    for rel in rels:
        kind = scan_file(root / rel)
        if kind:
            found.append(Finding(rel, kind))
    return found


def scan_tree(root: str | Path) -> list[Finding]:
    """Scan every file under `root` (links are not followed: a link would escape the folder)."""
    root = Path(root)
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return scan_paths(root, rels)


def refuse_if_secrets(root: str | Path, rels: Iterable[str] | None = None, action: str = "refusing to upload") -> None:
    """Raise SecretFoundError naming every file under `root` (or of `rels`) that holds a credential."""
    found = scan_tree(root) if rels is None else scan_paths(root, rels)
    if found:
        raise SecretFoundError(found, action)
