"""AWS adapters: the stdlib SigV4 client, EC2 (boto3), the DynamoDB ledger, SSM runner configs.

May import lambda_src.core, the standard library and boto3; never functions or host.
"""
