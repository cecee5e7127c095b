"""``python -m fer_train`` runs ``fer-train`` (handy under ``torchrun -m fer_train``)."""

from fer_train.cli import train_main

train_main()
