"""`python agents/run.py` (what `make demo` runs): start the whole kit offline and talk to it; `--help` for modes."""

import importlib
import sys
from pathlib import Path

# As a script, agents/ would come first on sys.path; the repository root must, so `a2a` stays the SDK.
sys.path[:1] = [str(Path(__file__).resolve().parent.parent)]

if __name__ == "__main__":
    sys.exit(importlib.import_module("ragtune.agents.demo").main())
