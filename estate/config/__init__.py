"""Config: the pool and Buildkite file models, the loader, stack settings, prices, diagnostics.

May import lambda_src.core and other estate.config modules only.
"""
