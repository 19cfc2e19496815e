"""The control plane on loopback (`estate serve`): the real handlers over moto_server and our fake GitHub.

May import estate.config, estate.derive and any of lambda_src; never sim, agent or the CLI.
"""
