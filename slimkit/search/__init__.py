"""Budget-driven compression: the search path over per-layer settings, budgets and trials, and the run that
writes the chosen recipe (``slimkit compress --target-size`` / ``--max-metric-loss``)."""
