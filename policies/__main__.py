"""What the language host runs (`python -u policies <engine address>`): serves the pack."""

import sys
from pathlib import Path

# Run as a directory, Python puts only that directory on sys.path; the pack's modules import
# each other as the `policies` package, which lives in the directory above.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.pack import serve

serve()
