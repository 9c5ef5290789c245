"""Command-line experiments: training (train.py) and the studies; configs/ holds ml_collections configs."""
