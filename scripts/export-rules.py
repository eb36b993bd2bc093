#!/usr/bin/env python3
"""Regenerate monitoring/rules and monitoring/tests (see supervision/export.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from supervision.export import main

if __name__ == "__main__":
    sys.exit(main())
