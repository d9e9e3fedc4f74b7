"""Hyperparameter selection on the validation split (`farm tune`): trials, search spaces, the Optuna study."""
