"""symgate's pipeline stages (fleet → ingest → train → export → gate → serve) and their command line."""

from pathlib import Path

__version__ = "0.1.0"

#: The repository checkout (presets under ``deploy/`` are found relative to it).
REPO = Path(__file__).resolve().parents[1]
