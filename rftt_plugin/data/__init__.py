"""Data: reading sources (dataset ids, local files), RL parquet for verl, benchmark loaders."""
