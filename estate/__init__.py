"""runner-estate outside AWS: config, what components derive from it, the CLI, and the offline harnesses.

The CLI (cli, preview, guard) sits on top; config at the bottom; may import lambda_src, never components.
"""

# The release, as `estate --version` prints it; pyproject.toml's version and CHANGELOG.md's
# newest entry name the same one (tests/test_packaging.py).
__version__ = "0.2.0"
