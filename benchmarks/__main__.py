"""``python -m fer_bench`` runs ``fer-bench``."""

from fer_bench.cli import run

run()
