"""`estate simulate`: the discrete-event simulator, the scaling policies it compares, workloads, the report.

May import estate.config, estate.derive and lambda_src.core; never local, agent or the CLI.
"""
