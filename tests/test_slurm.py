"""launch/slurm.sbatch and launch/slurm_array.sbatch on a real SLURM: one node on 127.0.0.1 with 2 CPUs and
no GPU, its daemons (munged, slurmctld, slurmd) started for this module with their state in a temporary
directory and stopped by PID afterwards. Needs root and Debian's slurmctld, slurmd, slurm-client and munge
packages (`.ci/apt_install.sh` installs them in CI); skipped, with the reason, where those are missing or the
daemons do not start."""

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import final_state, flat, sweep_cli, train_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "scancel", "sinfo", "squeue")
# Small enough for 2 CPUs, long enough (~15 s) to be signalled after its first checkpoint (step 50).
STEPS = "--config.train.num_steps=500"

SLURM_CONF = """\
ClusterName=cnnjaxtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    """A one-node cluster; `env` is what its client commands and jobs run with."""

    def __init__(self, root: Path):
        self.root = root
        self.daemons: dict[str, subprocess.Popen] = {}
        # munged wants every directory above its socket open to all (pytest's temporary directories are not).
        self.socket = Path(tempfile.mkdtemp(prefix="munge-")) / "munge.socket"
        self.socket.parent.chmod(0o755)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        self.env.pop("XLA_FLAGS", None)  # conftest's 8 forced devices: each task gets 1 CPU device here
        self.env.update(SLURM_CONF=str(root / "slurm.conf"), PYTHON=sys.executable, JAX_PLATFORMS="cpu")

    def start(self) -> None:
        root = self.root
        (root / "state").mkdir()
        (root / "spool").mkdir()
        key = root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        (root / "slurm.conf").write_text(
            SLURM_CONF.format(root=root, socket=self.socket, ctld_port=_free_port(), slurmd_port=_free_port())
        )
        self._daemon(
            "munged",
            "munged",
            "--foreground",
            f"--key-file={key}",
            f"--socket={self.socket}",
            f"--pid-file={root}/munged.pid",
            f"--log-file={root}/munged.log",
            f"--seed-file={root}/munged.seed",
        )
        self._wait(self.socket.exists, 10, "munged did not create its socket")
        self._daemon("slurmctld", "slurmctld", "-D", "-i")
        self._daemon("slurmd", "slurmd", "-D", "-N", "localhost")
        self._wait(
            lambda: self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip() == "idle",
            30,
            "the node did not come up idle",
        )

    def _daemon(self, name: str, *command: str) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.daemons[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while not ready():
            dead = [name for name, p in self.daemons.items() if p.poll() is not None]
            if dead or time.time() > deadline:
                raise RuntimeError(f"{what}; exited: {dead or 'none'}\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted(self.root.glob("*.out")) + sorted(self.root.glob("*.log"))
        )

    def stop(self) -> None:
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            self.run("scancel", "--user=root", check=False)  # no training process outlives the test
            deadline = time.time() + 30
            while self.run("squeue", "-h", check=False).stdout.strip() and time.time() < deadline:
                time.sleep(0.5)
        for name in reversed(list(self.daemons)):
            process = self.daemons[name]
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.socket.parent, ignore_errors=True)

    def run(self, *command, check=True, cwd=REPO) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=60)
        assert not check or result.returncode == 0, f"{shlex.join(command)}: {result.stdout}{result.stderr}"
        return result

    def submit(self, *command) -> str:
        """Run an sbatch command line; return the job id it prints."""
        out = self.run(*command).stdout
        match = re.search(r"Submitted batch job (\d+)", out)
        assert match, out
        return match.group(1)

    def jobs(self, job: str) -> list[dict[str, str]]:
        """`scontrol show job`'s fields, one dict per job (an array job: one per task)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job).stdout
        return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in out.splitlines()]

    def wait_for(self, job: str, states: set[str], timeout: float = 120) -> list[dict[str, str]]:
        """Wait until every task of `job` is in one of `states`; fail early on a state outside them."""
        deadline = time.time() + timeout
        while True:
            jobs = self.jobs(job)
            current = {j["JobState"] for j in jobs}
            if current <= states:
                return jobs
            ended = current - states - {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED"}
            assert not ended, f"job {job} ended {current}, not {states}:\n{jobs}\n{self.logs()}"
            assert time.time() < deadline, f"job {job} still {current} after {timeout} s, not {states}"
            time.sleep(0.5)

    def preempt(self, job: str, checkpoints: Path) -> None:
        """Once a checkpoint exists, send the script the signal SLURM sends before the time limit, wait for
        the requeue, and start the job again without SLURM's hold (~130 s after a requeue)."""
        _wait_for_checkpoint(checkpoints)
        self.run("scancel", "--signal=USR1", "--batch", job)
        deadline = time.time() + 60
        while (state := self.jobs(job)[0])["JobState"] != "PENDING" or state["Restarts"] != "1":
            assert time.time() < deadline, f"job {job} was not requeued: {state}"
            time.sleep(0.5)
        time.sleep(5)  # right away, slurmd refuses the restart ("Job credential revoked")
        self.run("scontrol", "update", f"JobId={job}", "StartTime=now")


def _wait_for_checkpoint(checkpoints: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not (checkpoints.is_dir() and any(checkpoints.iterdir())):
        assert time.time() < deadline, f"no checkpoint in {checkpoints} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [tool for tool in DAEMONS + CLIENTS if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"SLURM is not installed here (missing {', '.join(missing)}): install Debian's slurmctld, "
            f"slurmd, slurm-client and munge, as .ci/run does with .ci/apt_install.sh"
        )
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root to start jobs")
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as error:
        cluster.stop()
        pytest.skip(f"the SLURM daemons did not start: {error}")
    yield cluster
    cluster.stop()


def _test_records(workdir: Path) -> list[dict]:
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "test/accuracy" in r]


def test_two_task_job_preempted_requeues_and_ends_where_an_uninterrupted_one_ends(slurm, tfds_dir, tmp_path):
    """The header's resources run as they are on a CPU-only node; a 2-task job as documented, once straight
    through and once signalled like the time limit does: checkpoint, requeue, resume, same final numbers."""
    submitted = {}
    for name in ("straight", "preempted"):
        submitted[name] = slurm.submit(
            "sbatch",
            "--nodes=1",
            "--ntasks-per-node=2",
            f"--output={tmp_path}/{name}.out",
            "launch/slurm.sbatch",
            *train_cli(tmp_path / name, tfds_dir, STEPS)[3:],
        )
    # 2 CPUs: the second job starts when the first ends.
    slurm.wait_for(submitted["straight"], {"COMPLETED"})
    straight = (tmp_path / "straight.out").read_text()
    assert "process 0 of 2" in straight and "process 1 of 2" in straight, straight[-3000:]

    slurm.preempt(submitted["preempted"], tmp_path / "preempted" / "checkpoints")
    [job] = slurm.wait_for(submitted["preempted"], {"COMPLETED"})
    assert job["Restarts"] == "1"
    log = (tmp_path / "preempted.out").read_text()
    assert "asking the training processes to checkpoint and stop" in log
    stopped = re.findall(r"stopped by SIGTERM at step (\d+)", log)
    assert len(stopped) == 2 and len(set(stopped)) == 1, log[-3000:]  # both tasks, at the same step
    assert "requeueing to resume from the last checkpoint" in log
    assert f"resuming from step {stopped[0]}" in log
    assert "Killed" not in log

    runs = {name: tmp_path / name for name in submitted}
    finals = {name: json.loads((run / "final.json").read_text()) for name, run in runs.items()}
    for key in ("step", "test/accuracy", "test/loss"):
        assert finals["preempted"][key] == finals["straight"][key], (key, finals)
    assert _test_records(runs["preempted"]) == _test_records(runs["straight"])
    np.testing.assert_array_equal(flat(final_state(runs["preempted"])), flat(final_state(runs["straight"])))


def test_sweep_array_runs_as_printed_and_a_preempted_task_resumes(slurm, tfds_dir, tmp_path):
    study = tmp_path / "study"
    emit = sweep_cli(
        study,
        "--grid=model.conv.kind=standard,local",
        "--seeds=0",
        f"--set=dataset.data_dir={tfds_dir}",
        "--set=model.options.channels=8",
        "--set=train.batch_size=80",
        "--set=train.eval_batch_size=200",
        "--set=train.log_every_steps=10",
        "--set=train.checkpoint_every_steps=50",
        "--set=train.num_steps=500",
    )
    printed = slurm.run(*emit, "--emit=slurm").stdout.strip()
    assert printed == f"sbatch --array=0-1 launch/slurm_array.sbatch {study}/jobs.txt"
    slurm.env["SBATCH_OUTPUT"] = f"{tmp_path}/array-%a.out"  # instead of slurm-*.out in the checkout
    try:
        array = slurm.submit(*shlex.split(printed))
    finally:
        del slurm.env["SBATCH_OUTPUT"]
    slurm.preempt(f"{array}_0", study / "kind=standard" / "seed0" / "checkpoints")
    tasks = slurm.wait_for(array, {"COMPLETED"})
    assert sorted((t["ArrayTaskId"], t["Restarts"]) for t in tasks) == [("0", "1"), ("1", "0")]
    log = (tmp_path / "array-0.out").read_text()
    stopped = re.findall(r"stopped by SIGTERM at step (\d+)", log)
    assert len(stopped) == 1 and f"resuming from step {stopped[0]}" in log, log[-3000:]
    for run in ("kind=standard", "kind=local"):
        assert json.loads((study / run / "seed0" / "final.json").read_text())["step"] == 500
    assert slurm.run(*emit, "--emit=slurm").stdout.strip() == f"every run in {study} has finished; nothing to submit"
