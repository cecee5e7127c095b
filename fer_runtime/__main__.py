"""``python -m fer_runtime`` runs ``fer-predict``."""

from fer_runtime.cli.predict import main

main()
