#!/usr/bin/env bash
# Stage the Kaggle datasets and the submission kernel, print the kaggle commands, and run them with --upload.
#
# usage: scripts/package_kaggle.sh {weights|wheels|repo|notebook|all} [options]
#   weights   staging/kaggle/weights: the trunk-only export (model.pt, config.yaml, README.md model card)
#   wheels    staging/kaggle/wheels:  the offline wheelhouse (built unless --wheelhouse DIR is given)
#   repo      staging/kaggle/repo:    a clean `git archive HEAD` of this repo
#   notebook  staging/kaggle/kernel:  kaggle_notebooks/trm_submission.ipynb rendered by papermill --prepare-only
#             with the /kaggle/input paths injected, and kernel-metadata.json (GPU on, internet off)
# options:
#   --user USER          Kaggle owner of the datasets and kernel (default: $KAGGLE_USERNAME)
#   --out DIR            staging folder (default: staging/kaggle); an existing one holding files this script
#                        did not stage is refused, never emptied (--force: replace only its target subfolders)
#   --export-dir DIR     a `trm export` folder for `weights`, or
#   --checkpoint PATH    a checkpoint to export (trunk only) [--arch KEY=VALUE ...]
#   --wheelhouse DIR     a wheelhouse from wheels/build_wheelhouse.sh (verified against its SHA256SUMS)
#   --competition SLUG   competition source and data dir (default: arc-prize-2025; it changes every year)
#   --param KEY=VALUE    extra notebook parameter, e.g. budget_minutes=690
#   --accelerator ID     kernel accelerator (4x L4: id unverified, e.g. NvidiaL4x4; check with kernels pull -m)
#   --dry-run            stage locally and print the kaggle commands; kaggle is not called (the default)
#   --upload [--create]  stage, then run them (datasets version; with --create: datasets create)
# --upload needs KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json with mode 600;
# they are never printed. Every staged folder is scanned for credentials first (a hit refuses, naming the file).
# More: python scripts/kaggle_staging.py --help (the staging code, beside this script)
set -euo pipefail

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  weights|wheels|repo|notebook|all) ;;
  *) usage >&2; exit 2 ;;
esac

# --repo-dir first so that a later --repo-dir in "$@" wins (argparse keeps the last value).
exec env "PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}" "$python" "$root/scripts/kaggle_staging.py" "$1" \
  --repo-dir "$root" "${@:2}"
