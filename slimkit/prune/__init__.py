"""Pruning: masks (pure math) and pruning methods."""
