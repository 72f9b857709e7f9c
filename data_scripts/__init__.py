"""Data pipeline: CoLLM / raw MovieLens-1M / raw Amazon-Book / synthetic → ``datasets.DatasetDict``; prompts."""
