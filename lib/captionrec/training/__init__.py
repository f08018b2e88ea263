"""Training: leakage-proof splits and sequences (Spark), loaders, metrics, the loop and its launch (torch)."""
