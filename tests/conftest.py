"""Puts the repo root on sys.path so tests can `from lab.lab import ...` and reach
plugins/ without installing the collection."""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
