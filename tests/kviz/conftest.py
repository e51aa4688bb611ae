"""kviz test helpers: the folder of _models_kviz.py is importable (also by child processes,
through PYTHONPATH in the CLI tests)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
