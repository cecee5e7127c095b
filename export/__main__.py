"""``python -m fer_export`` runs ``fer-export``."""

from fer_export.cli import main

main()
