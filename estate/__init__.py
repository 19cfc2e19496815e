"""runner-estate outside AWS: config, what components derive from it, the CLI, and the offline harnesses.

The CLI (cli, preview, guard) sits on top; config at the bottom; may import lambda_src, never components.
"""
