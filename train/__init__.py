"""fer_train: FER2013 data loading, augmentation, architectures and the training loop (PyTorch).

Installed under the import name ``fer_train`` (the source folder is ``train/``).
"""
