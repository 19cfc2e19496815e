"""What Lambda runs: the handlers and the shells that wire adapters to planners (webhook, scaler, block manager).

May import lambda_src.core and the adapters (aws, github); never host.
"""
