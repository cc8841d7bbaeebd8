#!/usr/bin/env bash
# Build the offline wheelhouse for Kaggle's Python: the trm_core wheel plus every runtime dependency the Kaggle
# image lacks (never torch), for CPython 3.11 and 3.12 on manylinux x86_64, with manifest.json and SHA256SUMS.
#
# usage: wheels/build_wheelhouse.sh [--out DIR] [--python X.Y ...] [--extra NAME ...] [--requirement REQ ...]
#                                   [--preinstalled FILE] [--with-gpu-extras [--flash-attn-wheel FILE|URL]]
#                                   [--dry-run]
#   --out DIR          where the wheels go (default: wheels/wheelhouse, git-ignored)
#   --python X.Y       target CPython, repeatable (default: 3.11 and 3.12)
#   --extra NAME       also ship trm_core[NAME]'s dependencies that Kaggle lacks (e.g. hub)
#   --requirement REQ  also ship REQ and its dependencies (e.g. 'einops>=0.8')
#   --preinstalled F   what the Kaggle image has (default: wheels/kaggle-preinstalled.txt)
#   --with-gpu-extras  also build the fused adam-atan2 when nvcc is present, and add --flash-attn-wheel
#   --dry-run          print the command that would run and exit
# Then on Kaggle: pip install --no-index --find-links /kaggle/input/trm-core-wheels trm_core
# Needs network access to PyPI. PYTHON overrides the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi

dry_run=0
args=(--out "$root/wheels/wheelhouse")
for arg in "$@"; do
  case "$arg" in
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --dry-run) dry_run=1 ;;
    *) args+=("$arg") ;;
  esac
done

cmd=(env "PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}" "$python" "$root/wheels/wheelhouse.py"
     --project-dir "$root" "${args[@]}")
if [[ "$dry_run" == 1 ]]; then
  printf 'would run:'; printf ' %q' "${cmd[@]}"; printf '\n'
  exit 0
fi
exec "${cmd[@]}"
