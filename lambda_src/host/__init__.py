"""Programs that run on runner hosts and GPU nodes, bundled into user-data: bootstrap, slot manager, nvidia-smi.

Stdlib only: may import lambda_src.core, lambda_src.aws.sigv4_client and other host modules, nothing else.
"""
