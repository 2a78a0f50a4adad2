"""A real single-node SLURM for tests: Debian's slurmctld, slurmd and munge on this machine.

`SlurmCluster.start()` installs the packages if they are missing and allowed
(CRYOGEN_SLURM_TEST=1 or CI=true), writes /etc/slurm/slurm.conf and gres.conf (one node named
after this host, 127.0.0.1, its cores and memory, one fake GPU so that `--gpus=1` jobs run), a
fresh state folder, and starts munged, slurmctld and slurmd in the foreground as child
processes, keeping their PIDs. `stop()` ends exactly those processes by PID and removes the
configuration it wrote. Anything that stops SLURM from starting raises `SlurmUnavailable`
with the reason, which the test turns into a skip (or a failure on CI).

Facts behind the choices (measured on this kind of machine, see the project's shared notes):
the configuration must be at /etc/slurm/slurm.conf (the executor plugin's job step strips
SLURM_CONF); cgroups do not work in containers (proctrack/linuxproc, task/none); without
accounting the plugin must poll with squeue, which needs MinJobAge >= 3 x its first wait; a GPU
without a device file is dropped and the node drains, so the fake GPU points at /dev/null.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
CONF_DIR = Path("/etc/slurm")
MARKER = "# written by CryoGEN's tests/slurm_harness.py"


class SlurmUnavailable(Exception):
    """SLURM cannot be set up on this machine; the message says why."""


def _have_binaries() -> bool:
    return all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "munged", "munge"))


def install_if_allowed() -> None:
    if _have_binaries():
        return
    if os.environ.get("CRYOGEN_SLURM_TEST") != "1" and os.environ.get("CI", "").lower() != "true":
        raise SlurmUnavailable(
            "SLURM is not installed; set CRYOGEN_SLURM_TEST=1 (or CI=true) to let the test apt-get install it"
        )
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("SLURM is not installed and cannot be: installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0 and cmd[1] == "install":
            raise SlurmUnavailable(
                f"apt-get install {' '.join(PACKAGES)} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
            )
    if not _have_binaries():
        raise SlurmUnavailable("SLURM packages installed but their programs are not on PATH")


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _meminfo_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 2000


def slurm_conf(node: str, root: Path, cpus: int, memory_mb: int) -> str:
    return f"""{MARKER}
ClusterName=cryogentest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Sockets=1 CoresPerSocket={cpus} ThreadsPerCore=1 RealMemory={memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def gres_conf(node: str) -> str:
    return f"{MARKER}\n# a fake GPU: gres/gpu drops GPUs without a device file, so point File at /dev/null\nNodeName={node} Name=gpu File=/dev/null Count=1\n"


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}
        self.written: list[Path] = []
        self.cpus = os.cpu_count() or 1
        self.memory_mb = max(1000, int(_meminfo_mb() * 0.8))

    # -- setup -----------------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        install_if_allowed()
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmctld/slurmd as SlurmUser root needs root")
        for port in (6817, 6818):
            if _port_in_use(port):
                raise SlurmUnavailable(f"port {port} is in use: a SLURM is already running here; not touching it")
        for name in ("slurm.conf", "gres.conf"):
            path = CONF_DIR / name
            if path.exists() and MARKER not in path.read_text(errors="replace"):
                raise SlurmUnavailable(
                    f"{path} exists and was not written by this test; not overwriting a real SLURM configuration"
                )
        for sub in ("state", "spool", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("slurm.conf", slurm_conf(self.node, self.root, self.cpus, self.memory_mb)),
            ("gres.conf", gres_conf(self.node)),
        ):
            (CONF_DIR / name).write_text(text)
            self.written.append(CONF_DIR / name)
        try:
            self._start_munge()
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
            self._wait(lambda: "UP" in self._out(["scontrol", "ping"]), 30, "slurmctld did not answer `scontrol ping`")
            self._spawn("slurmd", ["slurmd", "-D"])
            self._wait(
                lambda: self._node_state() in ("idle", "mix", "alloc"), 30, "slurmd did not register its node as idle"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return  # a munged is already running here: use it, and leave it alone
        try:
            user = pwd.getpwnam("munge")
        except KeyError:
            raise SlurmUnavailable("there is no munge user (munge package not installed properly)") from None
        if not Path("/etc/munge/munge.key").exists():
            raise SlurmUnavailable("/etc/munge/munge.key is missing")
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            os.chown(d, user.pw_uid, user.pw_gid)
        self._spawn("munged", ["/usr/sbin/munged", "--foreground"], user=user.pw_uid, group=user.pw_gid)
        self._wait(
            lambda: subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0,
            20,
            "munged did not start",
        )

    def _spawn(self, name: str, argv: list[str], **kwargs) -> None:
        with open(self.root / "log" / f"{name}.out", "ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs
            )

    def _wait(self, ok, seconds: float, problem: str) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with {p.returncode} while starting: {self.log_tail(name)}")
            if ok():
                return
            time.sleep(0.3)
        raise SlurmUnavailable(f"{problem} within {seconds:.0f} s: {self.log_tail()}")

    @staticmethod
    def _out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    def _node_state(self) -> str:
        return self._out(["sinfo", "-h", "-N", "-o", "%t"]).strip().rstrip("*~#$@+")

    def log_tail(self, name: str | None = None, lines: int = 8) -> str:
        files = [self.root / "log" / f"{name}.out"] if name else sorted((self.root / "log").glob("*"))
        out = []
        for f in files:
            if f.is_file():
                out += [f"[{f.name}] {line}" for line in f.read_text(errors="replace").splitlines()[-lines:]]
        return "\n".join(out)

    # -- queries ---------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld remembers (MinJobAge keeps finished ones for 5 minutes)."""
        text = self._out(["scontrol", "show", "job", "-o"])
        jobs = []
        for line in text.splitlines():
            if not line.startswith("JobId="):
                continue
            fields: dict[str, str] = {}
            for token in line.split(" "):
                key, sep, value = token.partition("=")
                if sep:
                    fields[key] = value
            jobs.append(fields)
        return jobs

    # -- teardown --------------------------------------------------------------------------

    def stop(self) -> None:
        """End the daemons this harness started, by PID (slurmd first), and remove its config."""
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for path in self.written:
            if path.exists() and MARKER in path.read_text(errors="replace"):
                path.unlink()
        self.written.clear()
