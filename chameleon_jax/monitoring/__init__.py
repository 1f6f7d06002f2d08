"""Monitoring in production (reads no config; no JAX, no TensorFlow).

statistics.py (what is measured of a served image), reference.py (the
profile exported with each version), events.py (the request log's
CloudEvents), drift.py (a window's tests), monitor.py (windows, gauges,
ledger), report.py (the HTML drift report); `python -m
chameleon_jax.monitoring` runs the monitor (__main__.py).
"""
