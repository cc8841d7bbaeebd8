#!/usr/bin/env bash
# container-onstart.sh: bring a GPU pod (RunPod or any CUDA box) up ready to pretrain trm_core, then hand over to
# the image's own start script so SSH and Jupyter stay up.
#
# Usage: bash container-onstart.sh [--dry-run] [--help]
#   --dry-run   print every step as "[dry-run] would: ..." and change nothing (secrets masked)
#
# Steps, in order; each one that finished before prints "skip: <step> (done ...)", so a second run on the same
# volume is fast, and a restarted pod picks up where it stopped:
#   1. system    apt-get packages (root only; marker on the container disk, which RunPod wipes on restart)
#   2. uv        pip-installs uv if it is missing
#   3. repo      clones TRM_REPO_URL at TRM_REPO_REF into TRM_REPO_DIR, or fast-forwards it; the token is handed
#                to git by a credential helper that reads $GITHUB_PAT from the environment: it is never in a URL,
#                a command line, .git/config or a log
#   4. env       uv venv (Python PYTHON_VERSION), CUDA torch for the driver, requirements.lock, trm_core
#                (marker in the venv, keyed by the lock's sha256, the Python and the torch build)
#   5. gpu       optional accelerators: flash-attn from a matching prebuilt wheel only (never compiled), the
#                fused adam-atan2 built with --no-build-isolation when nvcc exists; a skipped one says why
#   6. secrets   WANDB_API_KEY / HF_TOKEN are passed to training through the environment only
#   7. data      DATA_RECIPE=arc2concept: trm build-data --subsets training2 evaluation2 concept --test-set-name
#                evaluation2 (upstream's ARC-AGI-2 run); DATA_RECIPE=compact: trm select-tasks (the shipped CPU
#                trunk's held-out-free pool, every grid <= 12x12, no ARC-AGI-1/2 evaluation task) then trm build-data
#                --canvas-size 12 (for cfg_compact_pretrain_gpu, the CPU trunk's recipe sized for GPUs)
#   8. pretrain  (LAUNCH_PRETRAIN=1) nohup torchrun --nproc-per-node NUM_GPUS -m trm_core.train ..., log in
#                LOG_DIR, resume= the run dir when it has a checkpoint, skipped while that run is still alive
#   9. handover  exec BASE_START_SCRIPT if it exists (also after a failed step, so the pod stays reachable);
#                as PID 1 without one, sleep so the container stays up
#
# Environment (defaults in brackets):
#   WORKSPACE [/workspace]             persistent volume; everything below lives on it unless said otherwise
#   TRM_REPO_URL []                    https clone URL, without credentials; unset = use TRM_REPO_DIR as it is
#   TRM_REPO_REF [main]                branch or tag to clone and fast-forward to
#   TRM_REPO_DIR [$WORKSPACE/trm_core]
#   UPDATE_REPO [1]                    fetch + fast-forward an existing checkout (never a merge or a reset)
#   GITHUB_PAT []                      token for a private repo (secret)
#   GIT_USER_NAME / GIT_USER_EMAIL []  git identity for commits made on the pod
#   WANDB_API_KEY [] / HF_TOKEN []     secrets, inherited by the training processes, never written anywhere
#   INSTALL_SYSTEM_PACKAGES [1]        SYSTEM_PACKAGES [git curl ca-certificates build-essential ninja-build tmux]
#   SETUP_ENV [1]                      0 = use VENV_DIR as it is (the Docker image)
#   VENV_DIR [$TRM_REPO_DIR/.venv]     PYTHON_VERSION [3.12] (uv finds or downloads it)
#   TORCH_VERSION [2.13.0]             empty = the newest on the index
#   TORCH_INDEX_URL [from the driver]  see torch_index below for the table
#   INSTALL_FLASH_ATTN [1]             FLASH_ATTN_VERSION [2.8.3]; FLASH_ATTN_WHEEL = a wheel URL/path to use instead
#   INSTALL_ADAM_ATAN2 [1]             fused CUDA AdamATan2 (trm_core has a pure-torch one; this is only faster)
#   BUILD_DATA [1]                     NUM_AUG [1000]; DATA_RECIPE [arc2concept] or compact
#   DATA_DIR [$WORKSPACE/data/built/arc2concept-aug-$NUM_AUG; compact: .../compact-c12-aug-$NUM_AUG]
#   LAUNCH_PRETRAIN [0]                NUM_GPUS [every GPU nvidia-smi lists]
#   RUN_NAME [arc2concept-pretrain; compact: compact-pretrain]
#   TRAIN_CONFIG [cfg_pretrain; compact: cfg_compact_pretrain_gpu]
#   TRAIN_OVERRIDES [arch.L_cycles=4; compact: none] (space-separated key=value)
#   LOG_DIR [$WORKSPACE/logs]          STATE_DIR [$WORKSPACE/.trm_onstart] (data marker, pid files)
#   SYSTEM_STATE_DIR [/var/lib/trm_onstart]  BASE_START_SCRIPT [/start.sh]
# Runs land in $WORKSPACE/runs/$RUN_NAME (output_dir=); a WANDB_API_KEY adds wandb=True to the overrides.
# Exact resume needs the same number of GPUs as the run that wrote the checkpoint (set NUM_GPUS if it changed).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "container-onstart.sh: unknown argument: $arg" >&2; usage >&2; exit 2 ;;
    esac
done

WORKSPACE=${WORKSPACE:-/workspace}
TRM_REPO_URL=${TRM_REPO_URL:-}
TRM_REPO_REF=${TRM_REPO_REF:-main}
TRM_REPO_DIR=${TRM_REPO_DIR:-$WORKSPACE/trm_core}
UPDATE_REPO=${UPDATE_REPO:-1}
GIT_USER_NAME=${GIT_USER_NAME:-}
GIT_USER_EMAIL=${GIT_USER_EMAIL:-}
INSTALL_SYSTEM_PACKAGES=${INSTALL_SYSTEM_PACKAGES:-1}
SYSTEM_PACKAGES=${SYSTEM_PACKAGES:-git curl ca-certificates build-essential ninja-build tmux}
SETUP_ENV=${SETUP_ENV:-1}
VENV_DIR=${VENV_DIR:-$TRM_REPO_DIR/.venv}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
TORCH_VERSION=${TORCH_VERSION-2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
INSTALL_FLASH_ATTN=${INSTALL_FLASH_ATTN:-1}
FLASH_ATTN_VERSION=${FLASH_ATTN_VERSION:-2.8.3}
FLASH_ATTN_WHEEL=${FLASH_ATTN_WHEEL:-}
INSTALL_ADAM_ATAN2=${INSTALL_ADAM_ATAN2:-1}
BUILD_DATA=${BUILD_DATA:-1}
NUM_AUG=${NUM_AUG:-1000}
DATA_RECIPE=${DATA_RECIPE:-arc2concept}
case "$DATA_RECIPE" in
    arc2concept)
        DATA_DIR=${DATA_DIR:-$WORKSPACE/data/built/arc2concept-aug-$NUM_AUG}
        RUN_NAME=${RUN_NAME:-arc2concept-pretrain}
        TRAIN_CONFIG=${TRAIN_CONFIG:-cfg_pretrain}
        TRAIN_OVERRIDES=${TRAIN_OVERRIDES-arch.L_cycles=4} ;;
    compact)
        DATA_DIR=${DATA_DIR:-$WORKSPACE/data/built/compact-c12-aug-$NUM_AUG}
        RUN_NAME=${RUN_NAME:-compact-pretrain}
        TRAIN_CONFIG=${TRAIN_CONFIG:-cfg_compact_pretrain_gpu}
        TRAIN_OVERRIDES=${TRAIN_OVERRIDES-} ;;
    *) echo "container-onstart.sh: DATA_RECIPE must be arc2concept or compact, got '$DATA_RECIPE'" >&2; exit 2 ;;
esac
LAUNCH_PRETRAIN=${LAUNCH_PRETRAIN:-0}
NUM_GPUS=${NUM_GPUS:-}
LOG_DIR=${LOG_DIR:-$WORKSPACE/logs}
STATE_DIR=${STATE_DIR:-$WORKSPACE/.trm_onstart}
SYSTEM_STATE_DIR=${SYSTEM_STATE_DIR:-/var/lib/trm_onstart}
BASE_START_SCRIPT=${BASE_START_SCRIPT:-/start.sh}

# Caches and uv-managed Pythons on the volume, so a restarted pod reuses them (the venv links to that Python).
export UV_CACHE_DIR=${UV_CACHE_DIR:-$WORKSPACE/.cache/uv}
export UV_PYTHON_INSTALL_DIR=${UV_PYTHON_INSTALL_DIR:-$WORKSPACE/.cache/uv-python}
export UV_LINK_MODE=copy
export DEBIAN_FRONTEND=noninteractive
export GIT_TERMINAL_PROMPT=0
# RunPod's base image sets HF_HUB_ENABLE_HF_TRANSFER=1 but hf_transfer is not installed: downloads would fail.
export HF_HUB_ENABLE_HF_TRANSFER=0
# Secrets reach child processes through the environment only (the credential helper, wandb, huggingface_hub).
for secret in GITHUB_PAT WANDB_API_KEY HF_TOKEN; do
    if [ -n "${!secret:-}" ]; then export "${secret?}"; fi
done

current_step=start
LOG_STAMP=$(date +%Y%m%d-%H%M%S)

# --- output helpers -------------------------------------------------------------------------------------------
mask() {  # every secret value replaced by ***
    local text=$1 value
    for value in "${GITHUB_PAT:-}" "${WANDB_API_KEY:-}" "${HF_TOKEN:-}"; do
        if [ -n "$value" ]; then text=${text//"$value"/***}; fi
    done
    printf '%s\n' "$text"
}
say() { mask "$*"; }
step() { current_step=$1; say "==> $1: $2"; }
dry() { [ "$DRY_RUN" = 1 ]; }
run() {  # print, then run (or only print in dry-run)
    if dry; then say "[dry-run] would: $*"; return 0; fi
    say "+ $*"
    "$@"
}
run_logged() {  # run_logged LOGFILE CMD...: output to LOGFILE (long, noisy steps)
    local log=$1; shift
    if dry; then say "[dry-run] would: $* > $log"; return 0; fi
    say "+ $* > $log"
    mkdir -p "$(dirname "$log")"
    "$@" > "$log" 2>&1
}
sha256() { sha256sum | cut -d' ' -f1; }

# --- markers: first line = the key the step depended on, second = when it finished -------------------------
marker_ok() { [ -f "$1" ] && [ "$(head -n 1 "$1")" = "$2" ]; }
marker_write() {
    dry && return 0
    mkdir -p "$(dirname "$1")"
    printf '%s\n%s\n' "$2" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$1"
}
skip_done() { say "skip: $1 (done $(sed -n 2p "$2"), marker $2)"; }

# --- GPU facts ------------------------------------------------------------------------------------------------
driver_cuda() {  # the highest CUDA version the driver supports, e.g. 12.8; empty without a GPU
    command -v nvidia-smi > /dev/null 2>&1 || return 0
    nvidia-smi 2> /dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p' | head -n 1
}
gpu_count() {
    command -v nvidia-smi > /dev/null 2>&1 || { echo 0; return 0; }
    nvidia-smi -L 2> /dev/null | grep -c '^GPU ' || true
}
DRIVER_CUDA=$(driver_cuda)

# PyTorch wheel index for the driver. A driver runs wheels built for its CUDA version or older, so take the
# newest flavour it can run (PyTorch publishes cu126, cu128 and cu130 for current releases):
#   driver CUDA >= 13.0 (driver >= 580) -> cu130
#   driver CUDA >= 12.8 (driver >= 570) -> cu128   (12.9 drivers too: cu129 exists only for some releases)
#   driver CUDA >= 12.6 (driver >= 560) -> cu126
#   no GPU                              -> cpu
# TORCH_INDEX_URL overrides the table (e.g. for a release with other flavours).
torch_index() {
    local base=https://download.pytorch.org/whl
    if [ -n "$TORCH_INDEX_URL" ]; then echo "$TORCH_INDEX_URL"; return 0; fi
    if [ -z "$DRIVER_CUDA" ]; then echo "$base/cpu"; return 0; fi
    local major=${DRIVER_CUDA%%.*} minor=${DRIVER_CUDA#*.}
    local v=$((major * 100 + minor))
    if [ "$v" -ge 1300 ]; then echo "$base/cu130"
    elif [ "$v" -ge 1208 ]; then echo "$base/cu128"
    elif [ "$v" -ge 1206 ]; then echo "$base/cu126"
    else
        say "error: the driver supports CUDA $DRIVER_CUDA; current torch wheels need >= 12.6 (set TORCH_INDEX_URL)" >&2
        return 1
    fi
}

# --- handover: always the last thing, also after a failure, so SSH/Jupyter come up and the pod can be debugged --
handover() {
    local rc=$1
    if [ "$rc" != 0 ]; then
        say "onstart: FAILED in step '$current_step' (exit $rc): see the lines above; handing over anyway." >&2
    fi
    if [ -x "$BASE_START_SCRIPT" ]; then
        if dry; then say "[dry-run] would: exec $BASE_START_SCRIPT"; exit "$rc"; fi
        say "==> handover: exec $BASE_START_SCRIPT"
        exec "$BASE_START_SCRIPT"
    elif [ "$$" = 1 ]; then
        # PID 1 of a container: exiting would stop the container and the nohup'd training with it.
        if dry; then say "[dry-run] would: exec sleep infinity (PID 1, no $BASE_START_SCRIPT)"; exit "$rc"; fi
        say "==> handover: no $BASE_START_SCRIPT; PID 1 sleeps so the container stays up"
        exec sleep infinity
    fi
    exit "$rc"
}
trap 'handover $?' EXIT

# --- 1. system packages ---------------------------------------------------------------------------------------
step_system() {
    step system "apt packages: $SYSTEM_PACKAGES"
    local marker=$SYSTEM_STATE_DIR/system.done key
    key=$(printf '%s' "$SYSTEM_PACKAGES" | sha256)
    if [ "$INSTALL_SYSTEM_PACKAGES" != 1 ]; then say "skip: system (INSTALL_SYSTEM_PACKAGES=$INSTALL_SYSTEM_PACKAGES)"; return 0; fi
    if marker_ok "$marker" "$key"; then skip_done system "$marker"; return 0; fi
    if [ "$(id -u)" != 0 ]; then say "skip: system (not root: the image must bring these packages)"; return 0; fi
    local packages
    read -r -a packages <<< "$SYSTEM_PACKAGES"
    run apt-get update -qq
    run apt-get install -y -qq --no-install-recommends "${packages[@]}"
    marker_write "$marker" "$key"
}

# --- 2. uv ----------------------------------------------------------------------------------------------------
step_uv() {
    step uv "the environment manager"
    export PATH="$PATH:$HOME/.local/bin"
    if command -v uv > /dev/null 2>&1; then say "skip: uv (found $(command -v uv))"; return 0; fi
    if [ -x "$VENV_DIR/bin/python" ]; then
        run "$VENV_DIR/bin/python" -m pip install --quiet uv  # the image's venv (pip refuses --user inside a venv)
    else
        run env PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --user uv
    fi
}

# --- 3. repo --------------------------------------------------------------------------------------------------
git_auth() {  # git, offering $GITHUB_PAT through a credential helper that reads it from the environment
    if [ -z "${GITHUB_PAT:-}" ]; then run git "$@"; return; fi
    # The empty helper first clears any configured helper (e.g. "store"), so git cannot save the token anywhere.
    # shellcheck disable=SC2016  # $GITHUB_PAT must stay unexpanded here: git's shell reads it from the environment
    run git -c credential.helper= \
        -c 'credential.helper=!f() { test "$1" = get && printf "username=x-access-token\npassword=%s\n" "$GITHUB_PAT"; }; f' \
        "$@"
}

step_repo() {
    step repo "$TRM_REPO_DIR (${TRM_REPO_URL:-no TRM_REPO_URL} @ $TRM_REPO_REF)"
    if [ -n "$GIT_USER_NAME$GIT_USER_EMAIL" ]; then
        if [ -n "$GIT_USER_NAME" ]; then run git config --global user.name "$GIT_USER_NAME"; fi
        if [ -n "$GIT_USER_EMAIL" ]; then run git config --global user.email "$GIT_USER_EMAIL"; fi
    fi
    case "$TRM_REPO_URL" in
        *://*@*) say "error: TRM_REPO_URL holds credentials; give the URL without them and the token in GITHUB_PAT" >&2
                 return 1 ;;
    esac
    if [ -d "$TRM_REPO_DIR/.git" ]; then
        if [ "$UPDATE_REPO" != 1 ]; then say "skip: repo update (UPDATE_REPO=$UPDATE_REPO)"; return 0; fi
        say "skip: clone (checkout present); fast-forwarding to origin/$TRM_REPO_REF"
        if ! git_auth -C "$TRM_REPO_DIR" fetch --quiet origin "$TRM_REPO_REF"; then
            say "warning: fetch failed; keeping the current checkout"
        elif ! run git -C "$TRM_REPO_DIR" merge --ff-only --quiet FETCH_HEAD; then
            say "warning: cannot fast-forward (local commits or changes); keeping the current checkout"
        fi
    elif [ -n "$TRM_REPO_URL" ]; then
        git_auth clone --quiet --branch "$TRM_REPO_REF" "$TRM_REPO_URL" "$TRM_REPO_DIR"
    elif [ -f "$TRM_REPO_DIR/pyproject.toml" ]; then
        say "skip: repo (TRM_REPO_URL unset; using $TRM_REPO_DIR as it is)"
    else
        say "error: $TRM_REPO_DIR holds no checkout and TRM_REPO_URL is unset" >&2
        return 1
    fi
}

# --- 4. python env --------------------------------------------------------------------------------------------
ENV_KEY=
step_env() {
    step env "$VENV_DIR (Python $PYTHON_VERSION, torch ${TORCH_VERSION:-latest}, driver CUDA ${DRIVER_CUDA:-none})"
    local lock=$TRM_REPO_DIR/requirements.lock lock_hash=missing index
    if [ -f "$lock" ]; then lock_hash=$(sha256 < "$lock"); fi
    index=$(torch_index)
    ENV_KEY="lock=$lock_hash python=$PYTHON_VERSION torch=${TORCH_VERSION:-latest} index=$index"
    if [ "$SETUP_ENV" != 1 ]; then say "skip: env (SETUP_ENV=$SETUP_ENV; using $VENV_DIR as it is)"; return 0; fi
    local marker=$VENV_DIR/.onstart-env.done py=$VENV_DIR/bin/python
    if marker_ok "$marker" "$ENV_KEY" && [ -x "$py" ]; then skip_done env "$marker"; return 0; fi
    # torch first and alone: its build is machine-specific, so it is not in the hashed lock.
    run uv venv --clear --quiet --python "$PYTHON_VERSION" "$VENV_DIR"
    run uv pip install --python "$py" --index-url "$index" "torch${TORCH_VERSION:+==$TORCH_VERSION}"
    run uv pip install --python "$py" --require-hashes --no-deps -r "$lock"
    run uv pip install --python "$py" --no-deps --no-build-isolation -e "$TRM_REPO_DIR"
    run "$py" -c 'import torch, trm_core; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'
    marker_write "$marker" "$ENV_KEY"
}

# --- 5. optional GPU accelerators -----------------------------------------------------------------------------
# torch facts for the flash-attn wheel name, e.g. "2.8 12 TRUE cp312"
TORCH_FACTS_PY='import sys, torch
print(torch.__version__.split("+")[0].rsplit(".", 1)[0], torch.version.cuda.split(".")[0],
      str(torch._C._GLIBCXX_USE_CXX11_ABI).upper(), "cp%d%d" % sys.version_info[:2])'

install_flash_attn() {
    local py=$1 wheel=$FLASH_ATTN_WHEEL
    if [ "$INSTALL_FLASH_ATTN" != 1 ]; then say "skipped: flash-attn (INSTALL_FLASH_ATTN=$INSTALL_FLASH_ATTN)"; return 0; fi
    if [ -z "$wheel" ]; then
        if dry; then
            say "[dry-run] would: pick the flash-attn $FLASH_ATTN_VERSION wheel matching the venv's torch/CUDA/Python/ABI"
            return 0
        fi
        local torch_mm cuda_major abi pytag
        read -r torch_mm cuda_major abi pytag <<< "$("$py" -c "$TORCH_FACTS_PY")"
        wheel="https://github.com/Dao-AILab/flash-attention/releases/download/v$FLASH_ATTN_VERSION/flash_attn-$FLASH_ATTN_VERSION+cu${cuda_major}torch${torch_mm}cxx11abi${abi}-$pytag-$pytag-linux_x86_64.whl"
    fi
    # A wheel URL or file only: uv cannot fall back to compiling the sdist (hours, and often broken).
    if run_logged "$LOG_DIR/onstart-flash-attn.log" uv pip install --python "$py" --no-deps "$wheel"; then
        say "installed: flash-attn ($wheel)"
    else
        say "skipped: flash-attn (no prebuilt wheel $wheel; see $LOG_DIR/onstart-flash-attn.log); attention uses torch SDPA"
    fi
}

install_adam_atan2() {
    local py=$1
    if [ "$INSTALL_ADAM_ATAN2" != 1 ]; then say "skipped: fused adam-atan2 (INSTALL_ADAM_ATAN2=$INSTALL_ADAM_ATAN2)"; return 0; fi
    if ! command -v nvcc > /dev/null 2>&1; then
        say "skipped: fused adam-atan2 (no nvcc in this image); trm_core uses its pure-torch AdamATan2"
        return 0
    fi
    # --no-build-isolation: its setup.py builds the CUDA extension only when it can import torch (the venv's).
    if run_logged "$LOG_DIR/onstart-adam-atan2.log" uv pip install --python "$py" --no-build-isolation adam-atan2; then
        say "installed: fused adam-atan2"
    else
        say "skipped: fused adam-atan2 (build failed, see $LOG_DIR/onstart-adam-atan2.log); trm_core uses its pure-torch AdamATan2"
    fi
}

step_gpu() {
    step gpu "optional accelerators (flash-attn, fused adam-atan2)"
    if [ -z "$DRIVER_CUDA" ]; then
        say "skipped: flash-attn and fused adam-atan2 (no NVIDIA GPU; both are CUDA-only)"
        return 0
    fi
    local marker=$VENV_DIR/.onstart-gpu.done key
    key="$ENV_KEY flash=$INSTALL_FLASH_ATTN:$FLASH_ATTN_VERSION:$FLASH_ATTN_WHEEL adam=$INSTALL_ADAM_ATAN2 nvcc=$(command -v nvcc || true)"
    if marker_ok "$marker" "$key"; then skip_done gpu "$marker"; return 0; fi
    install_flash_attn "$VENV_DIR/bin/python"
    install_adam_atan2 "$VENV_DIR/bin/python"
    marker_write "$marker" "$key"
}

# --- 6. secrets for training ----------------------------------------------------------------------------------
step_secrets() {
    step secrets "wandb and Hugging Face"
    # No `wandb login`: it would copy the key into ~/.netrc. wandb.init reads WANDB_API_KEY from the environment,
    # which the nohup'd trainer inherits.
    if [ -n "${WANDB_API_KEY:-}" ]; then say "wandb: WANDB_API_KEY is set; training logs to wandb (wandb=True) and reads the key from the environment"
    else say "wandb: no WANDB_API_KEY; runs log locally only"; fi
    if [ -n "${HF_TOKEN:-}" ]; then say "hf: HF_TOKEN is set; huggingface_hub reads it from the environment"
    else say "hf: no HF_TOKEN; public Hugging Face downloads only"; fi
}

# --- 7. data --------------------------------------------------------------------------------------------------
step_data() {
    step data "$DATA_DIR"
    if [ "$BUILD_DATA" != 1 ]; then say "skip: data (BUILD_DATA=$BUILD_DATA)"; return 0; fi
    local prefix=$TRM_REPO_DIR/data/arc/arc-agi args select=()
    if [ "$DATA_RECIPE" = compact ]; then
        # The held-out-free pool by rule (never a task of ARC-AGI-1 evaluation or ARC-AGI-2 evaluation2, by id or
        # by content), written beside the dataset; then the compact canvas, without translation.
        local pool=$DATA_DIR.pool
        select=(--input-file-prefix "$prefix" --subsets training training2 concept
                --exclude-subsets evaluation evaluation2 --max-side 12 --output "$pool")
        args=(--challenges "${pool}_challenges.json" --solutions "${pool}_solutions.json" --canvas-size 12
              --num-aug "$NUM_AUG" --no-enable-train-translation)
    else
        args=(--input-file-prefix "$prefix" --subsets training2 evaluation2 concept
              --test-set-name evaluation2 --num-aug "$NUM_AUG")
    fi
    local marker=$STATE_DIR/data.done key
    key=$(printf '%s ' "$DATA_DIR" "${select[@]}" "${args[@]}" | sha256)
    if marker_ok "$marker" "$key" && [ -d "$DATA_DIR" ]; then skip_done data "$marker"; return 0; fi
    # Built beside the target and moved into place, so an interrupted build never looks finished.
    local partial=$DATA_DIR.partial log=$LOG_DIR/build-data-$LOG_STAMP.log
    run rm -rf "$partial"
    local select_log=$LOG_DIR/select-tasks-$LOG_STAMP.log
    if [ ${#select[@]} -gt 0 ] && ! run_logged "$select_log" trm select-tasks "${select[@]}"; then
        tail -n 20 "$select_log" >&2
        say "error: trm select-tasks failed; full log: $select_log" >&2
        return 1
    fi
    if ! run_logged "$log" trm build-data "${args[@]}" --output-dir "$partial"; then
        tail -n 20 "$log" >&2
        say "error: trm build-data failed; full log: $log" >&2
        return 1
    fi
    run rm -rf "$DATA_DIR"
    run mv "$partial" "$DATA_DIR"
    marker_write "$marker" "$key"
}

# --- 8. pretraining -------------------------------------------------------------------------------------------
step_pretrain() {
    step pretrain "run $RUN_NAME"
    if [ "$LAUNCH_PRETRAIN" != 1 ]; then say "skip: pretrain (LAUNCH_PRETRAIN=$LAUNCH_PRETRAIN)"; return 0; fi
    local run_dir=$WORKSPACE/runs/$RUN_NAME pidfile=$STATE_DIR/pretrain-$RUN_NAME.pid pid
    if [ -f "$pidfile" ]; then
        pid=$(head -n 1 "$pidfile")
        # The cmdline check guards against a pid reused by another process after a pod restart.
        if kill -0 "$pid" 2> /dev/null && grep -qa -- "+run_name=$RUN_NAME" "/proc/$pid/cmdline" 2> /dev/null; then
            say "skip: pretrain (run $RUN_NAME is already running, pid $pid, log $(sed -n 2p "$pidfile"))"
            return 0
        fi
    fi
    local nproc=${NUM_GPUS:-$(gpu_count)} overrides
    if [ "$nproc" -lt 1 ]; then nproc=1; fi
    read -r -a overrides <<< "$TRAIN_OVERRIDES"
    # wandb logging is off in the trainer by default: a given key turns it on (TRAIN_OVERRIDES can say wandb=False).
    if [ -n "${WANDB_API_KEY:-}" ] && [[ " $TRAIN_OVERRIDES" != *" wandb="* ]]; then overrides+=(wandb=True); fi
    local cmd=(torchrun --standalone --nnodes 1 --nproc-per-node "$nproc" -m trm_core.train
               --config-name "$TRAIN_CONFIG" "data_paths=[$DATA_DIR]" "output_dir=$WORKSPACE/runs" "${overrides[@]}"
               "+run_name=$RUN_NAME")
    local checkpoints=("$run_dir"/checkpoints/step_*)
    if [ -e "${checkpoints[0]}" ]; then
        say "resuming: $run_dir has ${#checkpoints[@]} checkpoint(s), latest $(printf '%s\n' "${checkpoints[@]##*/}" | sort -V | tail -n 1)"
        cmd+=("resume=$run_dir")
    fi
    local log=$LOG_DIR/$RUN_NAME-$LOG_STAMP.log
    if dry; then say "[dry-run] would: cd $WORKSPACE && PYTHONUNBUFFERED=1 nohup ${cmd[*]} > $log 2>&1 &"; return 0; fi
    mkdir -p "$LOG_DIR" "$STATE_DIR"
    say "+ cd $WORKSPACE && PYTHONUNBUFFERED=1 nohup ${cmd[*]} > $log 2>&1 &"
    (cd "$WORKSPACE" && PYTHONUNBUFFERED=1 exec nohup "${cmd[@]}" > "$log" 2>&1 < /dev/null) &
    printf '%s\n%s\n' "$!" "$log" > "$pidfile"
    say "pretraining started: pid $!; follow with: tail -f $log"
}

# --- main -----------------------------------------------------------------------------------------------------
if dry; then say "container-onstart: dry run, nothing will be changed"; fi
if ! dry; then mkdir -p "$WORKSPACE"; fi
if [ -d "$WORKSPACE" ]; then cd "$WORKSPACE"; fi
export VIRTUAL_ENV=$VENV_DIR PATH="$VENV_DIR/bin:$PATH"

step_system
step_uv
step_repo
step_env
step_gpu
step_secrets
step_data
step_pretrain
current_step=handover
