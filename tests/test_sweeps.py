"""Sweeps: the grammar, the leaderboard's statistics, and the runner over a
stand-in for training (tests/sweep_driver.py): exactly once with two
workers, SIGKILL and resume, PostgreSQL, bad input; and --mode=sweep
through main.py (e2e)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from chameleon_jax.sweeps import report, runner
from chameleon_jax.sweeps import space as s
from tests import sweep_driver

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "sweep_driver.py"


# --- the grammar -------------------------------------------------------------

def test_grammar_expands_products_zips_and_replicates():
  grid = s.product(s.sweep("a", [1, 2]),
                   s.zipped(s.sweep("b", ["x", "y"]), s.sweep("c", [3, 4])))
  assert grid == [{"a": 1, "b": "x", "c": 3}, {"a": 1, "b": "y", "c": 4},
                  {"a": 2, "b": "x", "c": 3}, {"a": 2, "b": "y", "c": 4}]
  space = s.Space(grid=grid, replicates=s.seeds(0, 1))
  assert space.keys == ["a", "b", "c"] and not space.sampled
  assert s.folds(3) == ({"data.fold": 0}, {"data.fold": 1}, {"data.fold": 2})
  assert s.from_experiment([{"seed": 1}]).grid == ({"seed": 1},)


@pytest.mark.parametrize("make,match", [
    (lambda: s.zipped(s.sweep("a", [1, 2]), s.sweep("b", [1])), "lengths"),
    (lambda: s.product(s.sweep("a", [1]), s.sweep("a", [2])), "two axes"),
    (lambda: s.Space(ranges={"a": s.Range(0, 1)}), "trials >= 1"),
    (lambda: s.Space(grid=s.sweep("seed", [1]), replicates=s.seeds(0)),
     "both swept and replicates"),
    (lambda: s.Range(1, 0), "below"),
    (lambda: s.Range(0, 1, log=True), "low > 0"),
    (lambda: s.from_experiment("lr"), "expected"),
])
def test_grammar_refuses_malformed_spaces(make, match):
  with pytest.raises((ValueError, TypeError), match=match):
    make()


# --- the leaderboard ----------------------------------------------------------

def _trial(number, overrides, scores):
  return optuna.trial.create_trial(
      value=float(np.mean(scores)), user_attrs={
          "candidate": overrides, "candidate_id": runner.candidate_id(overrides),
          "runs": [{"replicate": {"seed": i}, "run": f"r{number}{i}",
                    "score": sc, "steps": 100} for i, sc in enumerate(scores)]})


def test_leaderboard_ranks_with_intervals_and_a_paired_verdict(tmp_path):
  trials = [_trial(0, {"lr": 1}, [0.50, 0.52, 0.51]),
            _trial(1, {"lr": 2}, [0.60, 0.62, 0.61]),
            _trial(2, {"lr": 3}, [0.59, 0.63, 0.60])]
  board = report.write(trials, tmp_path, metric="score", identity="i",
                       keys=["lr"], winner_config="w.py")
  ranked = board["candidates"]
  assert [c["overrides"]["lr"] for c in ranked] == [2, 3, 1]
  assert ranked[0]["mean"] == pytest.approx(0.61)
  assert ranked[0]["std"] == pytest.approx(np.std([0.6, 0.62, 0.61], ddof=1))
  lo, hi = ranked[0]["interval"]
  assert 0.60 <= lo <= 0.61 <= hi <= 0.62
  # 0.61 against 0.6067 on paired seeds (+0.01, -0.01, +0.01): not significant.
  assert board["comparison"]["significant"] is False
  assert "NOT significantly better" in (tmp_path / "leaderboard.md").read_text()
  assert (tmp_path / "leaderboard.png").stat().st_size > 1000
  assert board["marginals"]["lr"][0] == {"value": 2, "mean": pytest.approx(0.61),
                                         "candidates": 1}
  # A clear lead on every paired replicate is significant.
  trials[2] = _trial(2, {"lr": 3}, [0.40, 0.41, 0.42])
  board = report.write(trials, tmp_path, metric="score", identity="i",
                       keys=["lr"], winner_config="w.py")
  assert board["comparison"]["significant"] is True
  # The order trials ran in does not change the files.
  text = (tmp_path / "leaderboard.json").read_text()
  report.write(trials[::-1], tmp_path, metric="score", identity="i",
               keys=["lr"], winner_config="w.py")
  assert (tmp_path / "leaderboard.json").read_text() == text


def test_bootstrap_interval_against_numpy():
  values = [0.1, 0.4, 0.35, 0.2]
  rng = np.random.default_rng(0)
  means = rng.choice(np.asarray(values), (report.RESAMPLES, 4)).mean(axis=1)
  assert report.bootstrap_interval(values) == [
      pytest.approx(np.percentile(means, 2.5)),
      pytest.approx(np.percentile(means, 97.5))]


# --- the runner over the stand-in ---------------------------------------------

def _executions(workdir: Path) -> dict[str, int]:
  return {p.parent.name: len(p.read_text().split())
          for p in (workdir / "sweep" / "runs").glob("*/executions.log")}


def _ranked(workdir: Path) -> list:
  board = json.loads((workdir / "sweep" / "leaderboard.json").read_text())
  return [(c["overrides"], c["scores"], c["runs"]) for c in board["candidates"]]


def _driver(workdir: Path, storage: str, parallel: int = 1, **kwargs):
  return subprocess.Popen(
      [sys.executable, str(DRIVER), "sweep", str(workdir), storage,
       str(parallel)], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, **kwargs)


def _processes_with(text: str) -> list[str]:
  """Command lines of live processes that contain `text` (from /proc)."""
  found = []
  for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
    try:
      line = cmdline.read_bytes().replace(b"\0", b" ").decode()
    except OSError:
      continue
    if text in line:
      found.append(line)
  return found


def _sqlite(workdir: Path) -> str:
  (workdir / "sweep").mkdir(parents=True, exist_ok=True)
  return f"sqlite:///{workdir / 'sweep' / 'study.db'}"


def test_a_grid_runs_every_run_once_and_a_rerun_runs_nothing(tmp_path):
  board = sweep_driver.sweep(tmp_path, _sqlite(tmp_path))
  assert len(board["candidates"]) == 6
  assert set(_executions(tmp_path).values()) == {1} and \
      len(_executions(tmp_path)) == 12
  best = board["candidates"][0]
  assert best["overrides"] == {"lr": 0.3, "width": 16}
  assert best["scores"] == [sweep_driver.score({"lr": 0.3, "width": 16,
                                                "seed": i}) for i in (0, 1)]
  sweep_driver.sweep(tmp_path, _sqlite(tmp_path))  # The same command again.
  assert set(_executions(tmp_path).values()) == {1}


def test_two_workers_share_a_study_without_running_a_trial_twice(tmp_path):
  storage = _sqlite(tmp_path)
  workers = [_driver(tmp_path, storage) for _ in range(2)]
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  assert all(w.returncode == 0 for w in workers), outputs
  executions = _executions(tmp_path)
  assert len(executions) == 12 and set(executions.values()) == {1}
  trials = optuna.load_study(study_name="driver", storage=storage).get_trials()
  complete = [t for t in trials if t.state.name == "COMPLETE"]
  assert len({t.user_attrs["candidate_id"] for t in complete}) == 6


@pytest.mark.e2e
def test_sigkill_mid_sweep_then_rerun_equals_an_uninterrupted_sweep(tmp_path):
  whole = tmp_path / "whole"
  sweep_driver.sweep(whole, _sqlite(whole))
  killed = tmp_path / "killed"
  proc = _driver(killed, _sqlite(killed), env={
      **os.environ, "SWEEP_DRIVER_SLEEP": "2.0"})
  deadline = time.time() + 120
  while time.time() < deadline:  # Kill once runs are done and one is half-way.
    done = list((killed / "sweep" / "runs").glob("*/metrics.jsonl")) \
        if (killed / "sweep" / "runs").exists() else []
    if len(done) >= 3 and any(
        (p.parent / "checkpoint").exists() and not (p.parent / "metrics.jsonl").exists()
        for p in (killed / "sweep" / "runs").glob("*/job.json")):
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  time.sleep(1.0)  # The run in flight dies with the sweep (no orphan).
  assert _processes_with(f"{killed}/sweep/runs") == []
  before = _executions(killed)
  finished = {p.parent.name for p in
              (killed / "sweep" / "runs").glob("*/score.json")}
  assert 3 <= len(finished) < 12
  rerun = _driver(killed, _sqlite(killed))
  output = rerun.communicate(timeout=300)[0]
  assert rerun.returncode == 0, output
  after = _executions(killed)
  for run in finished:  # Finished runs are not run again ...
    assert after[run] == before[run] == 1
  assert all(after[r] - before.get(r, 0) == 1 for r in after
             if r not in finished)  # ... the others run (or resume) once.
  assert _ranked(killed) == _ranked(whole)


def test_an_unreachable_database_is_named(tmp_path):
  job = sweep_driver.job(tmp_path, "postgresql://user:secret@127.0.0.1:9/none")
  with pytest.raises(runner.SweepError, match=r"postgresql://\*\*\*@127.0.0.1:9"
                     r"/none: cannot open the study database"):
    runner.Runner(job, log=lambda *a: None)


def test_a_study_of_another_sweep_is_refused(tmp_path):
  sweep_driver.sweep(tmp_path, _sqlite(tmp_path))
  job = sweep_driver.job(tmp_path, _sqlite(tmp_path))
  other = runner.Job(**{**job.__dict__, "identity": "another"})
  with pytest.raises(runner.SweepError, match="belongs to another sweep"):
    runner.Runner(other, log=lambda *a: None)


def test_postgresql_two_workers(tmp_path, postgres_url):
  workers = [_driver(tmp_path, postgres_url) for _ in range(2)]
  outputs = [w.communicate(timeout=300)[0] for w in workers]
  assert all(w.returncode == 0 for w in workers), outputs
  executions = _executions(tmp_path)
  assert len(executions) == 12 and set(executions.values()) == {1}
  assert _ranked(tmp_path)[0][0] == {"lr": 0.3, "width": 16}


# --- --mode=sweep: the composer ------------------------------------------------

def _experiment(tmp_path: Path, grid: str) -> Path:
  path = tmp_path / "exp.py"
  path.write_text(
      "from chameleon_jax.sweeps import space as s\n"
      "from tests import tiny_config\n\n\n"
      "def get_config():\n  return tiny_config.get_config()\n\n\n"
      f"def get_sweep():\n  return s.Space(grid={grid})\n")
  return path


@pytest.mark.parametrize("grid,match", [
    ('s.sweep("train.learnin_rate", [1e-3])',
     r"'train.learnin_rate' is not a config key \(did you mean "
     r"'train.learning_rate'\?\)"),
    ('s.sweep("train.steps", ["many"])', r"'train.steps' = 'many'"),
    ('s.sweep("loss.name", ["dice_ce", "dice_cee"])',
     r"\{'loss.name': 'dice_cee'\} make an invalid config: KeyError"),
])
def test_sweep_checks_every_candidate_before_running(tmp_path, grid, match):
  from chameleon_jax.components import sweep as sweep_mode
  from tests import tiny_config
  config = tiny_config.get_config()
  config.lock()
  with pytest.raises(runner.SweepError, match=match):
    sweep_mode.sweep(config, str(tmp_path / "w"),
                     str(_experiment(tmp_path, grid)), "main.py")
  assert not (tmp_path / "w" / "sweep" / "study.db").exists()


def test_a_workdir_of_another_sweep_is_refused_and_kept(tmp_path):
  from chameleon_jax.components import sweep as sweep_mode
  from tests import tiny_config
  record = tmp_path / "w" / "sweep" / "sweep.json"
  record.parent.mkdir(parents=True)
  record.write_text('{"identity": "0123456789abcdef"}')
  config = tiny_config.get_config()
  config.lock()
  with pytest.raises(runner.SweepError, match="holds another sweep"):
    sweep_mode.sweep(config, str(tmp_path / "w"), str(_experiment(
        tmp_path, 's.sweep("train.learning_rate", [1e-3])')), "main.py")
  assert record.read_text() == '{"identity": "0123456789abcdef"}'


@pytest.mark.e2e
def test_sweep_through_main_trains_reports_and_resumes(tmp_path):
  command = [sys.executable, "main.py", "--config=tests/tiny_sweep.py",
             f"--workdir={tmp_path}", "--mode=ingest,sweep"]
  first = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                         timeout=900)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "== sweep ==" in first.stdout
  board = json.loads((tmp_path / "sweep/leaderboard.json").read_text())
  assert len(board["candidates"]) == 2
  assert all(len(c["scores"]) == 2 for c in board["candidates"])
  runs = sorted((tmp_path / "sweep/runs").glob("*/score.json"))
  assert len(runs) == 4
  # Each run is an ordinary workdir: its best validation is the score.
  for c in board["candidates"]:
    for run, score in zip(c["runs"], c["scores"]):
      rows = [json.loads(line) for line in
              (tmp_path / "sweep/runs" / run / "metrics.jsonl").read_text().splitlines()]
      assert score == max(r["mean_defect_iou"] for r in rows
                          if r["split"] == "val")
  from chameleon_jax import configfile
  winner = configfile.load(tmp_path / "sweep/winner.py")
  assert winner.train.learning_rate == board["candidates"][0]["overrides"][
      "train.learning_rate"]
  logs = {p: p.stat().st_mtime for p in (tmp_path / "sweep/runs").glob("*/train.log")}
  again = subprocess.run(command[:-1] + ["--mode=sweep"], cwd=REPO,
                         capture_output=True, text=True, timeout=900)
  assert again.returncode == 0, again.stderr[-3000:]
  assert {p: p.stat().st_mtime for p in logs} == logs  # nothing retrained
  assert json.loads((tmp_path / "sweep/leaderboard.json").read_text()) == board


# --- successive halving -------------------------------------------------------

def test_rung_steps_start_with_a_pass_over_the_defect_images():
  from chameleon_jax.sweeps import halving
  assert halving.rung_steps((0.1, 0.33, 1.0), 300, 20) == [30, 99, 300]
  assert halving.rung_steps((0.1, 0.33, 1.0), 300, 120) == [120, 300]
  assert halving.rung_steps((0.5, 1.0), 300, 1000) == [300]
  assert halving.first_pass_steps(267, 16, 0.5) == 34


def test_promotion_keeps_candidates_within_the_replicate_spread():
  from chameleon_jax.sweeps import halving
  scores = {"a": [0.80, 0.82], "b": [0.70, 0.74], "c": [0.69, 0.71],
            "d": [0.40, 0.42], "e": [0.30, 0.50], "f": [0.10, 0.12]}
  decision = halving.promote(scores)
  # ceil(6/3) = 2 by rank (a, b); c trails b by 0.02, within b's spread
  # (std 0.028); e is 0.32 behind with spread 0.14: pruned, as are d and f.
  assert {c for c, d in decision.items() if d["promoted"]} == {"a", "b", "c"}
  assert "within the replicate spread" in decision["c"]["reason"]
  assert "beyond the replicate spread" in decision["e"]["reason"]
  # One replicate: no spread, plain top-k.
  single = halving.promote({k: v[:1] for k, v in scores.items()})
  assert {c for c, d in single.items() if d["promoted"]} == {"a", "b"}


def test_halving_prunes_resumes_and_reports_its_share_of_the_grid(tmp_path):
  from chameleon_jax.sweeps import halving
  space = s.Space(grid=sweep_driver.SPACE.grid, replicates=s.seeds(0, 1),
                  rungs=(0.25, 0.5, 1.0))
  job = sweep_driver.job(tmp_path, _sqlite(tmp_path), parallel=2, space=space)
  trials = halving.run(job, total_steps=20, first_min=1, log=lambda *a: None)
  board = report.write(trials, tmp_path / "sweep", metric="score",
                       identity="driver-1", keys=space.keys,
                       winner_config="w.py", grid_steps=6 * 2 * 20)
  ranked = board["candidates"]
  assert ranked[0]["overrides"] == {"lr": 0.3, "width": 16}
  assert not ranked[0]["pruned"] and all(c["pruned"] for c in ranked[1:])
  assert [h["steps"] for h in ranked[0]["rungs"]] == [5, 10, 20]
  # The runner-up trails by 0.008 at 10 steps, beyond the seeds' spread
  # (0.0071): pruned there, after two rungs.
  assert [h["steps"] for h in ranked[1]["rungs"]] == [5, 10]
  # 4 x 2 runs x 5 steps + 2 x 10 + 2 x 20 = 100 of the grid's 240.
  assert board["compute_steps"] == 100 and board["grid_steps"] == 240
  assert "42% of the" in (tmp_path / "sweep" / "leaderboard.md").read_text()
  # A rerun decides the same from the stored rung scores and runs nothing.
  before = _executions(tmp_path)
  again = halving.run(job, total_steps=20, first_min=1, log=lambda *a: None)
  assert _executions(tmp_path) == before
  assert report.candidates(again) == report.candidates(trials)


def test_sampled_ranges_draw_the_requested_trials_reproducibly(tmp_path):
  space = s.Space(grid=s.sweep("width", [8, 16]),
                  ranges={"lr": s.Range(0.05, 0.6, log=True)}, trials=4,
                  replicates=s.seeds(0), seed=3)
  drawn = []
  for name in ("a", "b"):
    job = sweep_driver.job(tmp_path / name, _sqlite(tmp_path / name),
                           space=space)
    trials = runner.Runner(job, log=lambda *a: None).run()
    assert len(trials) == 4
    values = [t.user_attrs["candidate"] for t in
              sorted(trials, key=lambda t: t.number)]
    assert all(0.05 <= v["lr"] <= 0.6 and v["width"] in (8, 16)
               for v in values)
    drawn.append(values)
  assert drawn[0] == drawn[1]  # The sampler is seeded: the same draws.
