"""Everything that ships to AWS: the pure core, its adapters, the Lambda functions, and the host programs.

Arrows point down: functions -> adapters (aws, github) -> core; host -> core + the stdlib SigV4 client.
Nothing here imports estate or components.
"""
