"""bench/methods.py in parts: plan (what to train and evaluate), run (features, training, evaluation, references), report (tables, plots, docs/results.md)."""
