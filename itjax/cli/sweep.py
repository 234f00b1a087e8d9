"""`itjax sweep`: an experiment file's runs (train, then eval), one summary table and plot."""

from __future__ import annotations

from absl import flags

from itjax.cli.common import Command
from itjax.errors import UserError


def define(fv: flags.FlagValues) -> None:
  flags.DEFINE_bool("dry_run", False, "Print the planned runs, their overrides and commands; run nothing.",
                    flag_values=fv)
  flags.DEFINE_list("only", None, "Run only these arms or runs of the experiment, comma-separated.",
                    flag_values=fv)
  flags.DEFINE_bool("summary_only", False, "Write the summary of the runs on disk (finished or not); run nothing.",
                    flag_values=fv)
  flags.DEFINE_string("control", None, "The arm the summary compares the others with, in place of the file's "
                      "CONTROL; '(base)': the base model before training.", flag_values=fv)
  flags.DEFINE_enum("launcher", "local", ["local", "tpu"], "Run here, one after another (local), or on a TPU slice "
                    "made by launch/tpu.py create (tpu, with --tpu and --zone).", flag_values=fv)
  flags.DEFINE_integer("parallel", 1, "Local runs at once.", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("runs_dir", "runs", "Runs go to RUNS_DIR/NAME/RUN (a gs:// path on a slice).", flag_values=fv)
  flags.DEFINE_string("tpu", None, "With --launcher tpu: the slice's name (launch/tpu.py create --name).",
                      flag_values=fv)
  flags.DEFINE_string("zone", None, "With --launcher tpu: the slice's zone.", flag_values=fv)
  flags.DEFINE_string("project", None, "With --launcher tpu: the Google Cloud project (default: gcloud's).",
                      flag_values=fv)


def cmd_sweep(f: flags.FlagValues, args: list[str]) -> int:
  from itjax.sweep import sweep
  if len(args) != 1:
    raise UserError("give one experiment file: itjax sweep experiments/NAME.py [--flags]")
  if not f.dry_run and f.launcher == "local":
    from itjax.io import workdir as workdir_lib
    workdir_lib.check_writable(f.runs_dir, "--runs_dir")
  say = lambda line: print(line, flush=True)  # noqa: E731
  if f.summary_only:
    return sweep.summarize(args[0], f.runs_dir, say, f.control)
  return sweep.main(args[0], dry_run=f.dry_run, only=f.only, launcher=f.launcher, parallel=f.parallel,
                    runs_dir=f.runs_dir, tpu=f.tpu, zone=f.zone, project=f.project, say=say, control=f.control)


COMMANDS = (
    Command("sweep", "an experiment file's runs, each trained (and evaluated), into one summary table and plot",
            "experiments/NAME.py[:VARIANT] [--dry_run | --summary_only] [--only ARM_OR_RUN[,...]]\n"
            "[--control ARM|(base)]\n"
            "[--launcher local|tpu] [--parallel N]\n"
            "[--runs_dir runs] [--tpu NAME --zone ZONE [--project P]]\n"
            "(re-run to go on; finished runs are skipped)",
            define, cmd_sweep, positional=True),
)
