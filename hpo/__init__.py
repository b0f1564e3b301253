"""hpo: an Optuna study service over the NumPy networks of ``trainer``.

The only package that imports optuna. ``python -m hpo run`` searches a study spec's space,
trains each trial's configuration and stores every result in an RDB storage (SQLite by default).
"""
