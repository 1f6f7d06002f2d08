"""Governance: the regression gate (gate.py) and the append-only ledger of
its decisions and of label moves (ledger.py). Reads no config."""
