"""Training: the loop and its config, profiles, the starting model's pretraining, data-parallel
training."""
