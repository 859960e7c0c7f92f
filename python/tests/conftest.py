"""Shared paths for the Python tests: the repository root, its example optimizers and the
golden trajectories."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
OPTIMIZERS = ROOT / "examples" / "optimizers"
GOLDEN = ROOT / "tests" / "golden"
