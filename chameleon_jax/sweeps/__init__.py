"""Sweeps (--mode=sweep): a search space run, resumed and reported.

  space.py    the grammar of get_sweep(): grids (sweep, product, zipped),
              ranges (Optuna distributions), replicates (seeds, folds)
  runner.py   Optuna study (SQLite / PostgreSQL), workers, runs as processes,
              heartbeats and stale trials, resume, scores
  report.py   leaderboard (mean ± std, bootstrap interval, paired verdict),
              marginals per key, the PNG

The composer (components/sweep.py) resolves and checks candidates against
the config and writes each run's config; nothing here reads a config.
"""
