"""End-to-end training through main.py, in subprocesses (fresh JAX per run).

Covers: the quickstart path (ingest, train, eval, predict), multi-device and
multi-process data parallelism, exact resume after SIGKILL, the NaN guard and
clear errors for bad configs/workdirs, and that TensorFlow is never imported.
"""

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, checkpoint_digest, run_main, xla_flags

CONFIG = "--config=tests/tiny_config.py"


def _losses(workdir: Path) -> list[float]:
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [l["loss"] for l in lines if l["split"] == "train"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
  """A dataset root shared by the tests of this module (ingested once)."""
  root = tmp_path_factory.mktemp("data")
  run_main(CONFIG, f"--workdir={root}", "--mode=ingest",
           f"--config.data.root={root}")
  return root


def test_ingest_train_eval_predict(ingested, tmp_path):
  workdir = tmp_path / "run"
  result = run_main(CONFIG, f"--workdir={workdir}", "--mode=train,eval",
                    f"--config.data.root={ingested}")
  assert "== eval on test: figures of argmax masks" in result.stdout
  assert "mean_defect_iou" in result.stdout
  metrics = json.loads((workdir / "eval" / "test_metrics.json").read_text())
  assert metrics["num_images"] > 0 and metrics["checkpoint_step"] == 20
  assert list((workdir / "eval" / "test_worst").glob("*.png"))
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert len(_losses(workdir)) == 20
  # Predict on a folder of PNGs of another size (not a multiple of 2).
  from chameleon_jax.data import synthetic
  spec = synthetic.SyntheticSpec(num_images=3, seed=9, min_size=(37, 45),
                                 max_size=(37, 45))
  synthetic.write_folder(spec, tmp_path / "new")
  run_main(CONFIG, f"--workdir={workdir}", "--mode=predict",
           f"--config.data.root={ingested}",
           f"--config.predict.input_dir={tmp_path / 'new' / 'images'}")
  masks = sorted((workdir / "predictions").glob("*_mask.png"))
  assert len(masks) == 3
  from PIL import Image
  assert np.asarray(Image.open(masks[0])).shape == (37, 45)
  # The same images by sliding windows of the training size.
  run_main(CONFIG, f"--workdir={workdir}", "--mode=predict",
           f"--config.data.root={ingested}",
           f"--config.predict.input_dir={tmp_path / 'new' / 'images'}",
           f"--config.predict.output_dir={tmp_path / 'windowed'}",
           "--config.predict.window=(16,16)")
  windowed = sorted((tmp_path / "windowed").glob("*_mask.png"))
  assert [m.name for m in windowed] == [m.name for m in masks]
  assert np.asarray(Image.open(windowed[0])).shape == (37, 45)


def test_a_tiny_run_learns_the_defects(tmp_path):
  """The pipeline can learn: 300 steps on 96 grey 32x32 images with one
  defect class (5-15 % of an image) reach a test defect IoU of 0.63 (both
  LLVM levels, 2026-12-03); the same run with its training masks shifted
  by 8 px against the images (a misaligned pipeline) reaches 0.13. So 0.4
  fails any bug that misaligns images and masks, not a slow machine."""
  run_main("--config=tests/tiny_config.py:learn", f"--workdir={tmp_path}",
           "--mode=ingest,train,eval")
  metrics = json.loads((tmp_path / "eval" / "test_metrics.json").read_text())
  assert metrics["mean_defect_iou"] >= 0.4, metrics


def test_training_never_imports_tensorflow(ingested, tmp_path):
  """Records every attempt to import TensorFlow (installed or not).

  Presence probes (`importlib.util.find_spec`, as etils.epath does) are not
  imports and are allowed.
  """
  code = (
      "import sys, importlib.abc, traceback\n"
      "attempts = []\n"
      "class Spy(importlib.abc.MetaPathFinder):\n"
      "  def find_spec(self, name, path=None, target=None):\n"
      "    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):\n"
      "      stack = traceback.extract_stack()\n"
      "      if not any(f.name == 'find_spec' and 'importlib' in f.filename\n"
      "                 and 'util' in f.filename\n"
      "                 for f in stack):\n"
      "        attempts.append((name, traceback.format_list(stack[-6:-1])))\n"
      "    return None\n"
      "sys.meta_path.insert(0, Spy())\n"
      "from absl import flags; flags.FLAGS.mark_as_parsed()\n"
      "from tests.tiny_config import get_config\n"
      "from chameleon_jax.components import modes\n"
      f"c = get_config(); c.data.root = {str(ingested)!r}; c.train.steps = 3\n"
      f"modes.train(c, {str(tmp_path)!r}); modes.evaluate(c, {str(tmp_path)!r})\n"
      "assert not attempts, attempts\n"
      "assert not any(m.startswith('tensorflow') for m in sys.modules)\n"
      "print('NO_TF')\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert "NO_TF" in result.stdout, result.stderr[-3000:]


@pytest.mark.e2e
@pytest.mark.parametrize("norm", ["group", "batch"])
def test_four_devices_match_one_device(ingested, tmp_path, norm):
  # BatchNorm: its statistics are the global batch's on any device count
  # (jit reduces across the batch-sharded devices), so the curves agree too.
  curves = {}
  for devices in (1, 4):
    workdir = tmp_path / f"d{devices}"
    run_main(CONFIG, f"--workdir={workdir}", "--mode=train",
             f"--config.data.root={ingested}", f"--config.model.kwargs.norm={norm}",
             env={"XLA_FLAGS": xla_flags(devices)})
    curves[devices] = np.array(_losses(workdir))
  assert len(curves[1]) == 20
  rel = np.abs(curves[4] - curves[1]) / np.abs(curves[1])
  assert rel.max() < 1e-4, rel


@pytest.mark.e2e
def test_two_processes_agree(ingested, tmp_path):
  import portpicker
  port = portpicker.pick_unused_port()
  procs = []
  for pid in range(2):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": xla_flags(2)}
    procs.append(subprocess.Popen(
        [sys.executable, "main.py", CONFIG, f"--workdir={tmp_path / 'mp'}",
         "--mode=train", f"--config.data.root={ingested}",
         "--config.train.steps=10",
         f"--config.distributed.coordinator_address=127.0.0.1:{port}",
         "--config.distributed.num_processes=2",
         f"--config.distributed.process_id={pid}",
         "--config.train.checkpoint_every=100"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
  outputs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]
  losses = _losses(tmp_path / "mp")  # Written by process 0.
  assert len(losses) == 10 and np.isfinite(losses).all()
  logged = [[float(m) for m in re.findall(rf"process {pid} step \d+ loss (\S+)",
                                          err)]
            for pid, (_, err) in enumerate(outputs)]
  assert logged[0] == logged[1] and len(logged[0]) == 10
  # The data are independent of the process count: a one-process run on 4
  # devices with the same global batch gives the same curve.
  run_main(CONFIG, f"--workdir={tmp_path / 'single'}", "--mode=train",
           f"--config.data.root={ingested}", "--config.train.steps=10",
           env={"XLA_FLAGS": xla_flags(4)})
  np.testing.assert_allclose(losses, _losses(tmp_path / "single")[:10],
                             rtol=1e-4)


@pytest.mark.e2e
def test_sigkill_and_resume_gives_identical_parameters(ingested, tmp_path):
  args = [CONFIG, f"--config.data.root={ingested}", "--config.train.steps=30",
          "--config.train.checkpoint_every=10", "--config.train.keep_checkpoints=5",
          "--config.data.num_workers=1"]
  run_main(*args, f"--workdir={tmp_path / 'straight'}")
  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "main.py", *args,
                           f"--workdir={killed}"], cwd=REPO,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
  deadline = time.time() + 240
  while time.time() < deadline:
    if (killed / "checkpoints" / "10").is_dir() and len(_safe_losses(killed)) >= 12:
      break
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  done = len(_safe_losses(killed))
  assert 12 <= done < 30, f"kill landed at step {done}"
  run_main(*args, f"--workdir={killed}")
  assert checkpoint_digest(killed) == checkpoint_digest(tmp_path / "straight")
  # metrics.jsonl: every step once (the killed run's steps after its last
  # checkpoint dropped), the same losses as the straight run's.
  steps = [json.loads(l)["step"] for l in
           (killed / "metrics.jsonl").read_text().splitlines()
           if json.loads(l)["split"] == "train"]
  assert steps == list(range(1, 31))
  np.testing.assert_allclose(_losses(killed), _losses(tmp_path / "straight"),
                             rtol=1e-6)


def _safe_losses(workdir: Path) -> list[float]:
  try:
    return _losses(workdir)
  except (FileNotFoundError, json.JSONDecodeError):
    return []


def test_nan_guard_stops_with_a_clear_message(ingested, tmp_path):
  result = run_main(CONFIG, f"--workdir={tmp_path}", "--mode=train",
                    f"--config.data.root={ingested}",
                    "--config.train.learning_rate=1e30",
                    "--config.train.grad_clip_norm=0",
                    "--config.train.checkpoint_every=1", check=False)
  assert result.returncode != 0
  # Issue 39, trap 9: one line that says what to do, and nothing after it
  # (no traceback, no asynchronous checkpoint dying at exit).
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("--mode=train stopped: NonFiniteLossError: ")
  assert "at step" in last and "Lower train.learning_rate" in last
  for noise in ("Traceback", "cannot schedule new futures"):
    assert noise not in result.stderr, result.stderr[-3000:]


def test_unknown_config_key_is_named(tmp_path):
  result = run_main(CONFIG, f"--workdir={tmp_path}", "--config.modle=unet",
                    check=False)
  assert result.returncode != 0
  assert "modle" in result.stderr


@pytest.mark.e2e
def test_workdir_of_another_model_is_refused(ingested, tmp_path):
  run_main(CONFIG, f"--workdir={tmp_path}", "--mode=train",
           f"--config.data.root={ingested}", "--config.train.steps=5")
  result = run_main(CONFIG + ":unet_wide", f"--workdir={tmp_path}",
                    "--mode=train", f"--config.data.root={ingested}",
                    check=False)
  assert result.returncode != 0
  assert "ModelMismatchError" in result.stderr and "kwargs" in result.stderr
  # The refused run left the workdir's model card alone.
  card = json.loads((tmp_path / "model.json").read_text())
  assert card["signature"]["kwargs"]["widths"] == [8, 16]


def test_stop_at_then_resume_equals_a_straight_run(ingested, tmp_path):
  """A sweep's rung: stop at step 8 of a 16-step schedule (validated and
  checkpointed there), then resume to the end: the parameters and the last
  validation equal a straight 16-step run's."""
  args = [CONFIG, f"--config.data.root={ingested}", "--config.train.steps=16",
          "--config.train.checkpoint_every=100"]
  run_main(*args, f"--workdir={tmp_path / 'straight'}")
  rung = tmp_path / "rung"
  run_main(*args, f"--workdir={rung}", "--config.train.stop_at=8")
  rows = [json.loads(l) for l in (rung / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if r["split"] == "val"] == [8]
  assert (rung / "checkpoints" / "8").is_dir()
  run_main(*args, f"--workdir={rung}")
  assert checkpoint_digest(rung) == checkpoint_digest(tmp_path / "straight")
  last = lambda w: [json.loads(l) for l in (w / "metrics.jsonl").read_text()
                    .splitlines()][-1]
  assert last(rung) == last(tmp_path / "straight")


def _damage(step_dir: Path, how: str) -> None:
  if how == "truncated data file":  # Half of the largest array chunk.
    chunks = [p for p in (step_dir / "state").rglob("*") if p.is_file()
              and "ocdbt.process" in str(p)]
    biggest = max(chunks, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:biggest.stat().st_size // 2])
  else:  # A 0-byte meta/metadata (a crash between create and write).
    (step_dir / "meta" / "metadata").write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated data file", "empty metadata"])
def test_a_corrupt_latest_checkpoint_costs_one_checkpoint(ingested, tmp_path,
                                                          how):
  """Issue 37, item 5: training resumes from the step before a damaged
  latest checkpoint, which is kept aside, not deleted; when every step is
  damaged the error names each one."""
  workdir = tmp_path / "run"
  args = [CONFIG, f"--workdir={workdir}", "--mode=train",
          f"--config.data.root={ingested}",
          "--config.train.checkpoint_every=5",
          "--config.train.keep_checkpoints=3"]
  run_main(*args, "--config.train.steps=10")
  _damage(workdir / "checkpoints" / "10", how)
  resumed = run_main(*args, "--config.train.steps=15")
  assert "Checkpoint step 10 in" in resumed.stderr
  assert "Resumed from step 5 of" in resumed.stderr
  assert (workdir / "checkpoints.corrupt" / "10" / "meta").is_dir()
  assert ckpt_steps(workdir) == [5, 10, 15]  # 10 saved again, anew.
  for step in ckpt_steps(workdir):
    _damage(workdir / "checkpoints" / str(step), "empty metadata")
  failed = run_main(*args, "--config.train.steps=20", check=False)
  assert failed.returncode != 0
  assert "no checkpoint in" in failed.stderr
  assert all(f"step {s}: " in failed.stderr for s in ckpt_steps(workdir))


def ckpt_steps(workdir: Path) -> list[int]:
  from chameleon_jax.model_io.checkpoint import saved_steps
  return saved_steps(workdir)


def test_a_resumed_writer_drops_the_steps_after_its_checkpoint(tmp_path):
  from chameleon_jax.train.reporting import MetricWriter
  writer = MetricWriter(tmp_path)
  for step in range(1, 13):
    writer.write(step, "train", {"loss": 1.0 / step})
    if step == 10:
      writer.write(step, "val", {"dice": 0.5})
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 13, "spl')  # Cut by a kill.
  writer = MetricWriter(tmp_path, start=10)  # Resumed from checkpoint 10.
  writer.write(11, "train", {"loss": 0.25})
  writer.close()
  lines = [json.loads(l) for l in
           (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(l["step"], l["split"]) for l in lines] == (
      [(s, "train") for s in range(1, 11)] + [(10, "val"), (11, "train")])
  assert lines[-1]["loss"] == 0.25


def test_a_full_disk_ends_the_run_with_one_line(tmp_path):
  """A disk-full error deep in a stage (here wrapped by a library) ends main
  with one line naming the file, not hundreds of lines of traceback."""
  script = tmp_path / "full.py"
  script.write_text(
      "import errno, sys\n"
      f"sys.path.insert(0, {str(REPO)!r})\n"
      "import main\n"
      "from absl import app\n"
      "def ingest(config, workdir, log):\n"
      "  try:\n"
      "    raise OSError(errno.ENOSPC, 'No space left on device',\n"
      "                  workdir + '/data/shard-00000')\n"
      "  except OSError as e:\n"
      "    raise RuntimeError('array_record writer failed') from e\n"
      "main.components.ingest = ingest\n"
      "assert main.no_space(ValueError('boom')) is None\n"
      "app.run(main.main)\n")
  proc = subprocess.run(
      [sys.executable, str(script), f"--config={REPO / 'tests/tiny_config.py'}",
       f"--workdir={tmp_path / 'w'}", "--mode=ingest"], cwd=REPO,
      capture_output=True, text=True, env={**os.environ,
                                           "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 1
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("--mode=ingest stopped: no space left on device")
  assert "w/data/shard-00000" in last
