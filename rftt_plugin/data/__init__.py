"""Data: reading sources (dataset ids, local files), benchmark loaders, and the parquet files verl
reads (RL prompts, SFT conversations)."""
