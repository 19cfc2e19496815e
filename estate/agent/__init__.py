"""`estate agent`: ephemeral JIT runner slots on machines we do not provision, and its pure decisions (plan).

May import lambda_src (core, github, host) and estate.config; never sim or local.
"""
