"""Every mistake about a path that the operating system reports is one line naming the path, with exit status 1:
a missing file, a directory where a file belongs and the reverse, no permission, a read-only file system, a full
disk, a name too long. Only a real bug exits 70 with a traceback. Each case stops before any model loads.

Permission tests use a real chmod'ed directory when not run as root (root may write anywhere); as root they
simulate the refusal where the check asks for it."""

import errno
import json
import os

import pytest

from conftest import itjax_in_process
from itjax import cli
from itjax.cli.common import Command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "itjax", "configs", "tiny_lora.py")
LONG = "n" * 300  # longer than any file system's name limit (255 bytes)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  """{name: path}: a directory, a file, a missing path, and valid inputs for the flags checked after a bad one."""
  root = tmp_path_factory.mktemp("os-errors")
  (root / "dir").mkdir()
  (root / "file.txt").write_text("not a directory\n")
  chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
  (root / "data.jsonl").write_text(json.dumps(chat) + "\n")
  ifeval = {"key": 1, "prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
  (root / "ifeval.jsonl").write_text(json.dumps(ifeval) + "\n")
  (root / "syntax.py").write_text("CONFIG = 'configs/tiny_lora.py'\nRUNS = {\n")
  (root / "raises.py").write_text("CONFIG = 'configs/tiny_lora.py'\n\nraise RuntimeError('no such thing here')\n")
  (root / "noruns.py").write_text("CONFIG = 'configs/tiny_lora.py'\n")
  return {"dir": str(root / "dir"), "file": str(root / "file.txt"), "missing": str(root / "missing.jsonl"),
          "under_file": str(root / "file.txt" / "x.jsonl"), "data": str(root / "data.jsonl"),
          "ifeval": str(root / "ifeval.jsonl"), "syntax": str(root / "syntax.py"), "raises": str(root / "raises.py"),
          "noruns": str(root / "noruns.py"), "out": str(root / "out"), "long": str(root / LONG),
          "root": str(root)}


def _one_line(ran, *named: str) -> str:
  lines = [line for line in ran.stderr.splitlines() if line.strip()]
  assert ran.returncode == 1, ran.stderr
  assert len(lines) == 1, ran.stderr
  for name in named:
    assert name in lines[0], lines[0]
  return lines[0]


def _train(*extra: str, workdir: str = "{out}/w", config: str = TINY) -> tuple[str, ...]:
  return ("train", f"--config={config}", f"--workdir={workdir}", "--config.model={model}", *extra)


# (args, the placeholder whose path the message names); {model} is a tiny HF model directory.
CASES = {
    "generate --model missing": (("generate", "--model", "{missing}", "--prompt", "hi"), "missing"),
    "generate --model a file": (("generate", "--model", "{file}", "--prompt", "hi"), "file"),
    "generate --model under a file": (("generate", "--model", "{under_file}", "--prompt", "hi"), "under_file"),
    "generate --prompts missing": (("generate", "--model", "{model}", "--prompts", "{missing}", "--out",
                                    "{out}/g.jsonl"), "missing"),
    "generate --prompts a directory": (("generate", "--model", "{model}", "--prompts", "{dir}", "--out",
                                        "{out}/g.jsonl"), "dir"),
    "demo --workdir a file": (("demo", "--workdir", "{file}"), "file"),
    "demo --workdir under a file": (("demo", "--workdir", "{under_file}"), "file"),
    "demo --config missing": (("demo", "--workdir", "{out}/d", "--config", "{missing}"), "missing"),
    "demo --config a directory": (("demo", "--workdir", "{out}/d", "--config", "{dir}"), "dir"),
    "inspect-data --data missing": (("inspect-data", "--data", "{missing}", "--model", "{model}"), "missing"),
    "inspect-data --data a directory": (("inspect-data", "--data", "{dir}", "--model", "{model}"), "dir"),
    "inspect-data --data under a file": (("inspect-data", "--data", "{under_file}", "--model", "{model}"),
                                         "under_file"),
    "inspect-data --model missing": (("inspect-data", "--data", "{data}", "--model", "{missing}"), "missing"),
    "inspect-data --model a file": (("inspect-data", "--data", "{data}", "--model", "{file}"), "file"),
    "train --workdir a file": (_train(workdir="{file}"), "file"),
    "train --workdir under a file": (_train(workdir="{under_file}"), "file"),
    "train --config missing": (_train(config="{missing}"), "missing"),
    "train --config a directory": (_train(config="{dir}"), "dir"),
    "train config.model missing": (_train("--config.model={missing}"), "missing"),
    "train config.model a file": (_train("--config.model={file}"), "file"),
    "train config.data.train missing": (_train("--config.data.train={missing}"), "missing"),
    "train config.data.train a directory": (_train("--config.data.train={dir}"), "dir"),
    "train config.data.validation a directory": (_train("--config.data.validation={dir}"), "dir"),
    "train config.init_adapter missing": (_train("--config.init_adapter={missing}"), "missing"),
    "train config.init_adapter a file": (_train("--config.init_adapter={file}"), "file"),
    "train config.replay.prompts a directory": (_train("--config.replay.n=2", "--config.replay.prompts={dir}"),
                                                "dir"),
    "train config.eval.data missing": (_train("--config.eval.suites=ifeval", "--config.eval.data={missing}"),
                                       "missing"),
    "train config.eval.text a directory": (_train("--config.eval.suites=forgetting", "--config.eval.text={dir}"),
                                           "dir"),
    "train config.eval.probes missing": (_train("--config.eval.suites=forgetting",
                                                "--config.eval.probes={missing}"), "missing"),
    "export --workdir missing": (("export", "--workdir", "{missing}", "--format", "hf", "--out", "{out}/e"),
                                 "missing"),
    "export --workdir a file": (("export", "--workdir", "{file}", "--format", "hf", "--out", "{out}/e"), "file"),
    "eval --model missing": (("eval", "--model", "{missing}", "--out", "{out}/ev"), "missing"),
    "eval --model a file": (("eval", "--model", "{file}", "--out", "{out}/ev"), "file"),
    "eval --base missing": (("eval", "--model", "{model}", "--base", "{missing}", "--out", "{out}/ev"), "missing"),
    "eval --data missing": (("eval", "--model", "{model}", "--suites", "ifeval", "--data", "{missing}", "--out",
                             "{out}/ev"), "missing"),
    "eval --data a directory": (("eval", "--model", "{model}", "--suites", "ifeval", "--data", "{dir}", "--out",
                                 "{out}/ev"), "dir"),
    "eval --responses missing": (("eval", "--responses", "{missing}", "--suites", "ifeval", "--data", "{ifeval}",
                                  "--out", "{out}/ev"), "missing"),
    "eval --responses a directory": (("eval", "--responses", "{dir}", "--suites", "ifeval", "--data", "{ifeval}",
                                      "--out", "{out}/ev"), "dir"),
    "eval --text missing": (("eval", "--model", "{model}", "--suites", "forgetting", "--text", "{missing}", "--out",
                             "{out}/ev"), "missing"),
    "eval --text a directory": (("eval", "--model", "{model}", "--suites", "forgetting", "--text", "{dir}", "--out",
                                 "{out}/ev"), "dir"),
    "eval --probes missing": (("eval", "--model", "{model}", "--suites", "forgetting", "--text", "{file}",
                               "--probes", "{missing}", "--out", "{out}/ev"), "missing"),
    "eval --probes a directory": (("eval", "--model", "{model}", "--suites", "forgetting", "--text", "{file}",
                                   "--probes", "{dir}", "--out", "{out}/ev"), "dir"),
    "curate --data missing": (("curate", "--data", "{missing}", "--out", "{out}/c.jsonl"), "missing"),
    "curate --data a directory": (("curate", "--data", "{dir}", "--out", "{out}/c.jsonl"), "dir"),
    "curate --model missing": (("curate", "--data", "{data}", "--out", "{out}/c.jsonl", "--model", "{missing}",
                                "--max_tokens", "64"), "missing"),
    "curate --decontaminate missing": (("curate", "--data", "{data}", "--out", "{out}/c.jsonl", "--decontaminate",
                                        "{missing}"), "missing"),
    "curate --decontaminate a directory": (("curate", "--data", "{data}", "--out", "{out}/c.jsonl",
                                            "--decontaminate", "{dir}"), "dir"),
    "distill --model missing": (("distill", "--model", "{missing}", "--data", "{data}", "--out", "{out}/s.jsonl"),
                                "missing"),
    "distill --data missing": (("distill", "--model", "{model}", "--data", "{missing}", "--out", "{out}/s.jsonl"),
                               "missing"),
    "distill --data a directory": (("distill", "--model", "{model}", "--data", "{dir}", "--out", "{out}/s.jsonl"),
                                   "dir"),
    "distill --prompts missing": (("distill", "--model", "{model}", "--self", "--prompts", "{missing}", "--out",
                                   "{out}/s.jsonl"), "missing"),
    "distill --prompts a directory": (("distill", "--model", "{model}", "--self", "--prompts", "{dir}", "--out",
                                       "{out}/s.jsonl"), "dir"),
    "distill --template a directory": (("distill", "--model", "{model}", "--data", "{data}", "--template", "{dir}",
                                        "--out", "{out}/s.jsonl"), "dir"),
    "sweep a missing file": (("sweep", "{missing}", "--dry_run"), "missing"),
    "sweep a directory": (("sweep", "{dir}", "--dry_run"), "dir"),
    "sweep a syntax error": (("sweep", "{syntax}", "--dry_run"), "syntax"),
    "sweep a file that raises": (("sweep", "{raises}", "--dry_run"), "raises"),
    "sweep a file without RUNS": (("sweep", "{noruns}", "--dry_run"), "noruns"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_bad_path_is_one_line_naming_it(case, paths, tiny_hf_dir):
  args, named = CASES[case]
  values = {**paths, "model": tiny_hf_dir}
  ran = itjax_in_process(*[a.format(**values) for a in args])
  _one_line(ran, paths[named])


def test_a_syntax_error_names_the_line(paths):
  line = _one_line(itjax_in_process("sweep", paths["syntax"], "--dry_run"))
  assert f"{paths['syntax']}:2: syntax error" in line
  line = _one_line(itjax_in_process(*_train(config=paths["syntax"], workdir=paths["out"] + "/w")))
  assert f"{paths['syntax']}:2: syntax error" in line
  line = _one_line(itjax_in_process("sweep", paths["raises"], "--dry_run"))
  assert f"{paths['raises']}:3:" in line and "RuntimeError: no such thing here" in line


def test_an_unknown_config_variant_is_the_configs_own_message(paths, tiny_hf_dir):
  ran = itjax_in_process("train", f"--config={TINY}:bogus", f"--workdir={paths['out']}/w",
                         f"--config.model={tiny_hf_dir}")
  _one_line(ran, TINY, "unknown variant 'bogus'", "expected '' or 'full'")
  assert "Traceback" not in ran.stderr


def test_debug_shows_the_traceback_and_keeps_the_status(paths):
  ran = itjax_in_process("sweep", paths["syntax"], "--dry_run", "--debug")
  assert ran.returncode == 1 and "Traceback" in ran.stderr and "SyntaxError" in ran.stderr
  assert ran.stderr.rstrip().splitlines()[-1].startswith("itjax sweep: error: ")


def test_a_name_too_long_is_one_line(paths, tiny_hf_dir):
  """Real: a 300-character name is refused by every common file system (ENAMETOOLONG)."""
  values = {**paths, "model": tiny_hf_dir}
  _one_line(itjax_in_process(*[a.format(**values) for a in _train(workdir=paths["long"])]), "too long")
  _one_line(itjax_in_process("sweep", paths["long"] + ".py", "--dry_run"), "too long")
  _one_line(itjax_in_process("inspect-data", "--data", paths["long"], "--model", tiny_hf_dir), LONG)
  _one_line(itjax_in_process(*[a.format(**values) for a in _train("--config.data.train={long}")]),
            "config.data.train", "too long")


def _refuse(monkeypatch, directory: str, read_only: bool = False) -> None:
  """`directory` takes no new files: a real chmod when not root; as root (who may write anyway) os.access says
  no for it, and os.statvfs says read-only when asked."""
  if os.geteuid() != 0 and not read_only:
    os.chmod(directory, 0o555)
    return
  access, statvfs = os.access, os.statvfs
  refused = os.path.abspath(directory)
  monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if os.path.abspath(p) == refused and mode & os.W_OK
                      else access(p, mode, *a, **k))
  if read_only:
    class ReadOnly:
      f_flag = os.ST_RDONLY
    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly() if os.path.abspath(p) == refused else statvfs(p))


@pytest.mark.parametrize("read_only", [False, True], ids=["permission denied", "read-only"])
@pytest.mark.parametrize("command", ["train", "demo", "sweep"])
def test_an_unwritable_workdir_stops_before_any_work(command, read_only, paths, tiny_hf_dir, tmp_path, monkeypatch):
  parent = tmp_path / "locked"
  parent.mkdir()
  _refuse(monkeypatch, str(parent), read_only)
  try:
    workdir = str(parent / "run")
    if command == "train":
      args = [a.format(model=tiny_hf_dir) for a in _train(workdir=workdir)]
    elif command == "demo":
      args = ("demo", "--workdir", workdir)
    else:
      experiment = tmp_path / "e.py"
      experiment.write_text(f"CONFIG = {TINY!r}\nRUNS = {{'a': {{}}}}\n")
      args = ("sweep", str(experiment), "--runs_dir", workdir)
    reason = "read-only file system" if read_only else "permission denied"
    line = _one_line(itjax_in_process(*args), workdir, f"cannot write in {parent} ({reason})")
    assert not os.path.exists(workdir), line
  finally:
    os.chmod(parent, 0o755)


def _unreadable(monkeypatch, path: str) -> None:
  """`path` cannot be read: a real chmod when not root; as root, os.access and open refuse it."""
  if os.geteuid() != 0:
    os.chmod(path, 0)
    return
  import builtins
  access, opener, refused = os.access, builtins.open, os.path.abspath(path)
  monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if os.path.abspath(p) == refused and mode & os.R_OK
                      else access(p, mode, *a, **k))

  def refuse(file, *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == refused:
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
    return opener(file, *args, **kwargs)
  monkeypatch.setattr(builtins, "open", refuse)


@pytest.mark.parametrize("case", ["train --config", "config.data.train", "inspect-data --data", "sweep"])
def test_an_unreadable_input_is_one_line(case, paths, tiny_hf_dir, tmp_path, monkeypatch):
  path = tmp_path / ("x.py" if case in ("train --config", "sweep") else "x.jsonl")
  path.write_text(open(paths["data"]).read() if path.suffix == ".jsonl" else "RUNS = {}\n")
  _unreadable(monkeypatch, str(path))
  try:
    args = {"train --config": _train(config=str(path)), "config.data.train": _train(f"--config.data.train={path}"),
            "inspect-data --data": ("inspect-data", "--data", str(path), "--model", "{model}"),
            "sweep": ("sweep", str(path), "--dry_run")}[case]
    ran = itjax_in_process(*[a.format(model=tiny_hf_dir, out=str(tmp_path)) for a in args])
    line = _one_line(ran, str(path))
    assert "ermission denied" in line, line
  finally:
    os.chmod(path, 0o644)


def _command(monkeypatch, raises: BaseException) -> None:
  """An `itjax boom` command whose run raises `raises`: how the error line of any command behaves."""
  def run(fv, args):
    raise raises
  monkeypatch.setitem(cli.COMMANDS, "boom", Command("boom", "raises", "", lambda fv: None, run))


@pytest.mark.parametrize("error, expected", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/metrics.jsonl"),
     "/data/run/metrics.jsonl: No space left on device (a write failed: make room"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/data/q"), "/data/q: " + os.strerror(errno.EDQUOT)),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/locked"), "/data/locked: Permission denied"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/x"), "/mnt/ro/x: Read-only file system"),
    (OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "/x/" + LONG), "File name too long"),
    (FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), "/a", None, "/b"), "/a -> /b: File exists"),
    (ValueError('Error writing local file "/ckpt/3/d/x": [OS error 28: No space left on device] '
                "[os_error_code=28]"), "/ckpt/3/d/x: No space left on device"),
], ids=["ENOSPC", "EDQUOT", "EACCES", "EROFS", "ENAMETOOLONG", "EEXIST", "tensorstore ENOSPC"])
def test_the_systems_refusal_is_one_line(error, expected, monkeypatch):
  _command(monkeypatch, error)
  line = _one_line(itjax_in_process("boom"))
  assert line.startswith("itjax boom: error: ") and expected in line, line
  ran = itjax_in_process("boom", "--debug")
  assert ran.returncode == 1 and "Traceback" in ran.stderr and expected in ran.stderr.splitlines()[-1]


def test_a_full_disk_while_training_is_one_line(paths, tiny_hf_dir, monkeypatch):
  """ENOSPC where the workdir is made (simulated): the line names the directory."""
  makedirs = os.makedirs
  workdir = os.path.join(paths["out"], "full")

  def full(path, *args, **kwargs):
    if os.path.abspath(path) == workdir:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return makedirs(path, *args, **kwargs)
  monkeypatch.setattr(os, "makedirs", full)
  ran = itjax_in_process(*[a.format(model=tiny_hf_dir) for a in _train(workdir=workdir)])
  _one_line(ran, workdir, "No space left on device")


def _bug_while_handling() -> AttributeError:
  try:
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/nowhere")
  except FileNotFoundError:
    try:
      None.missing  # noqa: B018
    except AttributeError as e:
      return e


@pytest.mark.parametrize("error", [RuntimeError("an internal mistake"), OSError(errno.EBADF, "Bad file descriptor"),
                                   OSError("no errno at all"), ValueError("os_error_code=9 elsewhere"),
                                   _bug_while_handling()],
                         ids=["RuntimeError", "EBADF", "OSError without errno", "ValueError with EBADF",
                              "a bug while a missing file was handled"])
def test_a_real_bug_still_exits_70_with_its_traceback(error, monkeypatch):
  """Also a bug raised while a missing file was being handled: the file is its context, not its cause."""
  _command(monkeypatch, error)
  ran = itjax_in_process("boom")
  assert ran.returncode == 70, ran.stderr
  assert "Traceback" in ran.stderr and "this is a bug in itjax" in ran.stderr
