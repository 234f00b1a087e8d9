"""Cloud TPU slices for itjax, through the gcloud CLI: create, set up, run on every worker, follow, delete.

  python launch/tpu.py create --name itjax-v5e --zone us-west4-a --type v5litepod-16 --spot
  python launch/tpu.py setup  --name itjax-v5e --zone us-west4-a
  python launch/tpu.py run    --name itjax-v5e --zone us-west4-a --retries 3 --type v5litepod-16 --spot -- \\
      .venv/bin/itjax train --config configs/llama31_8b_lora.py --workdir gs://BUCKET/runs/llama
  python launch/tpu.py logs   --name itjax-v5e --zone us-west4-a [--worker 0]
  python launch/tpu.py status --name itjax-v5e --zone us-west4-a
  python launch/tpu.py delete --name itjax-v5e --zone us-west4-a

Every subcommand takes --project P (default: gcloud's) and --dry_run, which prints each command on its own line
and runs nothing. The slice is a queued resource whose node has the same name. `run` starts the command detached on
every worker (--worker=all), each writing ~/itjax/logs/JOB.workerN.log; itjax train finds the other workers itself
(jax.distributed on a TPU slice). With --retries N, `run` stays and watches: when a spot slice is preempted it deletes
it, creates it again, sets it up and starts the same command, which resumes from the newest checkpoint in a gs://
workdir. Needs only Python's standard library and gcloud on the launching machine. See launch/README.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

# The TPU software version for JAX, by family (Cloud TPU's documentation, "TPU software versions").
RUNTIMES = {"v6e": "v2-alpha-tpuv6e", "v5p": "v2-alpha-tpuv5", "v5litepod": "v2-alpha-tpuv5-lite",
            "v4": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base", "v2": "tpu-ubuntu2204-base"}
REMOTE_DIR = "~/itjax"
ARCHIVE = "itjax-src.tar.gz"
WORKER_ID = ("$(curl -s -H Metadata-Flavor:Google "
             "http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)")
GONE = ("FAILED", "SUSPENDING", "SUSPENDED", "DELETING", "NOT_FOUND")  # queued-resource states of a lost slice
INSTALL = ("python3 -m venv .venv && .venv/bin/pip install -q -U pip && "
           ".venv/bin/pip install -q -e '.[tpu,gcs]'")


class LaunchError(Exception):
  """A wrong flag or a failed gcloud call: printed as one line."""


def runtime_for(tpu_type: str, runtime: str | None = None) -> str:
  if runtime:
    return runtime
  family = tpu_type.rsplit("-", 1)[0]
  if family not in RUNTIMES:
    raise LaunchError(f"--type {tpu_type}: unknown TPU family {family!r} (known: {', '.join(RUNTIMES)}); "
                      "give --runtime VERSION")
  return RUNTIMES[family]


def _where(args) -> list[str]:
  return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def _ssh(args, remote: str, worker: str = "all") -> list[str]:
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.name, f"--worker={worker}", *_where(args),
          f"--command={remote}"]


def create_commands(args) -> list[list[str]]:
  create = ["gcloud", "compute", "tpus", "queued-resources", "create", args.name, f"--node-id={args.name}",
            f"--accelerator-type={args.type}", f"--runtime-version={runtime_for(args.type, args.runtime)}",
            *_where(args)]
  if args.spot:
    create.append("--spot")
  elif args.reserved:
    create.append("--reserved")
  return [create]


def state_command(args) -> list[str]:
  return ["gcloud", "compute", "tpus", "queued-resources", "describe", args.name, *_where(args),
          "--format=value(state.state)"]


def setup_commands(args, archive: str) -> list[list[str]]:
  remote = (f"set -e; mkdir -p {REMOTE_DIR} && tar xzf ~/{ARCHIVE} -C {REMOTE_DIR} && cd {REMOTE_DIR} && "
            f"{INSTALL}")
  return [["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{args.name}:{ARCHIVE}", "--worker=all",
           *_where(args)],
          _ssh(args, remote)]


def run_commands(args) -> list[list[str]]:
  """One ssh to every worker: the command starts detached (setsid nohup) with its output in logs/JOB.workerN.log
  and its exit status, when it ends, in logs/JOB.workerN.exit."""
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    raise LaunchError("run: give the command after --, e.g. run --name N --zone Z -- .venv/bin/itjax train ...")
  log = f"logs/{args.job}.worker$TPU_WORKER_ID"
  inner = f"{shlex.join(command)}; echo $? > {log}.exit"
  remote = (f"cd {REMOTE_DIR} && mkdir -p logs && export TPU_WORKER_ID={WORKER_ID} && rm -f {log}.exit && "
            f"setsid nohup bash -c {shlex.quote(inner)} > {log}.log 2>&1 < /dev/null &")
  return [_ssh(args, remote)]


def exit_command(args) -> list[str]:
  return _ssh(args, f"cat {REMOTE_DIR}/logs/{args.job}.worker0.exit 2>/dev/null || true", worker="0")


def logs_commands(args) -> list[list[str]]:
  pattern = f"{REMOTE_DIR}/logs/{args.job or '*'}.worker{args.worker}.log"
  return [_ssh(args, f"tail -n {args.lines} {'-F ' if args.follow else ''}$(ls -t {pattern} | head -1)",
               worker=str(args.worker))]


def status_commands(args) -> list[list[str]]:
  return [["gcloud", "compute", "tpus", "queued-resources", "describe", args.name, *_where(args)],
          _ssh(args, f"cd {REMOTE_DIR}/logs 2>/dev/null && for f in *.exit; do echo \"$f: exit $(cat $f)\"; done; "
               "pgrep -af 'itjax' | grep -v pgrep || echo 'no itjax process'", worker="0")]


def delete_commands(args) -> list[list[str]]:
  return [["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *_where(args), "--force",
           "--quiet"]]


class Shell:
  def __init__(self, dry_run: bool):
    self.dry_run = dry_run

  def run(self, command: list[str], capture: bool = False) -> str:
    if self.dry_run:
      print(shlex.join(command), flush=True)
      return ""
    done = subprocess.run(command, text=True, stdout=subprocess.PIPE if capture else None)
    if done.returncode != 0 and not capture:
      raise LaunchError(f"`{shlex.join(command[:6])} ...` failed with exit status {done.returncode}")
    return (done.stdout or "").strip()


def wait_active(shell: Shell, args) -> None:
  if shell.dry_run:
    shell.run(state_command(args))
    return
  started = time.time()
  while True:
    state = shell.run(state_command(args), capture=True) or "NOT_FOUND"
    print(f"{args.name}: {state} after {(time.time() - started) / 60:.1f} min", flush=True)
    if state == "ACTIVE":
      return
    if state in GONE:
      raise LaunchError(f"{args.name}: the queued resource is {state}; see `python launch/tpu.py status`")
    time.sleep(args.poll)


def pack(root: str) -> str:
  """The repository's files (tracked and untracked, not ignored: no .venv, no runs) as a .tar.gz to copy."""
  listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                          stdout=subprocess.PIPE, check=True).stdout.decode().split("\0")
  path = os.path.join(tempfile.mkdtemp(), ARCHIVE)
  with tarfile.open(path, "w:gz") as tar:
    for name in filter(None, listed):
      if os.path.isfile(os.path.join(root, name)):
        tar.add(os.path.join(root, name), arcname=name)
  return path


def do_create(shell: Shell, args) -> None:
  for command in create_commands(args):
    shell.run(command)
  if not args.no_wait:
    wait_active(shell, args)


def do_setup(shell: Shell, args) -> None:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  archive = os.path.join(tempfile.gettempdir(), ARCHIVE) if shell.dry_run else pack(root)
  try:
    for command in setup_commands(args, archive):
      shell.run(command)
  finally:
    if not shell.dry_run:
      shutil.rmtree(os.path.dirname(archive), ignore_errors=True)


def do_run(shell: Shell, args) -> int:
  if args.retries and not args.type:
    raise LaunchError("run --retries needs --type (and --spot or --reserved, as at create) to re-create the slice")
  for command in run_commands(args):
    shell.run(command)
  if not args.retries:
    if not shell.dry_run:
      print(f"started on every worker of {args.name}; follow it with: python launch/tpu.py logs --name {args.name} "
            f"--zone {args.zone} --job {args.job}", file=sys.stderr)
    return 0
  if shell.dry_run:  # what a preemption would run, once
    print("# when the slice is preempted (up to --retries times):", flush=True)
    for command in delete_commands(args) + create_commands(args):
      shell.run(command)
    wait_active(shell, args)
    do_setup(shell, args)
    for command in run_commands(args):
      shell.run(command)
    shell.run(exit_command(args))
    return 0
  retries = args.retries
  while True:
    time.sleep(args.poll)
    state = shell.run(state_command(args), capture=True) or "NOT_FOUND"
    if state == "ACTIVE":
      status = shell.run(exit_command(args), capture=True)
      if status:
        print(f"{args.name}: the command ended on worker 0 with exit status {status}", flush=True)
        return int(status) if status.isdigit() else 1
      continue
    if state not in GONE:
      continue
    if retries == 0:
      raise LaunchError(f"{args.name}: the slice is {state} and no retries are left")
    retries -= 1
    print(f"{args.name}: {state}; re-creating it ({args.retries - retries} of {args.retries})", flush=True)
    for command in delete_commands(args):
      shell.run(command, capture=True)  # it may be gone already
    do_create(shell, args)
    do_setup(shell, args)
    for command in run_commands(args):
      shell.run(command)


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="launch/tpu.py", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="subcommand", required=True)
  for name in ("create", "setup", "run", "logs", "status", "delete"):
    s = sub.add_parser(name)
    s.add_argument("--name", required=True, help="the slice (queued resource and node) name")
    s.add_argument("--zone", required=True)
    s.add_argument("--project", default=None)
    s.add_argument("--dry_run", action="store_true", help="print each gcloud command; run nothing")
    if name in ("create", "run"):
      s.add_argument("--type", default=None, required=name == "create", help="accelerator type, e.g. v5litepod-16")
      s.add_argument("--runtime", default=None, help="TPU software version (default: by the type's family)")
      kind = s.add_mutually_exclusive_group()
      kind.add_argument("--spot", action="store_true", help="a spot slice (preemptible, cheaper)")
      kind.add_argument("--reserved", action="store_true", help="from the project's reservation")
      s.add_argument("--no_wait", action="store_true", help="create: return once the request is queued")
      s.add_argument("--poll", type=float, default=60.0, help="seconds between state checks")
    if name in ("run", "logs"):
      s.add_argument("--job", default=None if name == "logs" else time.strftime("job-%Y%m%d-%H%M%S"),
                     help="names the logs: logs/JOB.workerN.log (logs: default the newest)")
    if name == "run":
      s.add_argument("--retries", type=int, default=0, help="re-create a preempted slice and start again, N times")
      s.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...: run in the repo on every worker")
    if name == "logs":
      s.add_argument("--worker", type=int, default=0)
      s.add_argument("--lines", type=int, default=100)
      s.add_argument("--follow", action="store_true")
  return p


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)
  shell = Shell(args.dry_run)
  try:
    if args.subcommand == "create":
      runtime_for(args.type, args.runtime)
      do_create(shell, args)
    elif args.subcommand == "setup":
      do_setup(shell, args)
    elif args.subcommand == "run":
      if args.type:
        runtime_for(args.type, args.runtime)
      return do_run(shell, args)
    else:
      commands = {"logs": logs_commands, "status": status_commands, "delete": delete_commands}[args.subcommand]
      for command in commands(args):
        shell.run(command)
  except LaunchError as e:
    print(f"launch/tpu.py {args.subcommand}: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
