"""Shared set-up for the kparallel tests: the helper module for worker processes."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
# Workers import functions from _helpers_kparallel by name: make it importable here
# (kparallel.launch hands this process's sys.path on to its workers).
if HERE not in sys.path:
    sys.path.insert(0, HERE)
