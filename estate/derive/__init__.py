"""What the components compute from validated config: control-plane settings, user-data, IAM documents, subnets, runner groups.

May import estate.config and lambda_src.core (and, for user-data, the host modules it bundles as files).
"""
