"""Small training utilities: a classifier training loop and loss-computing forward loops."""
