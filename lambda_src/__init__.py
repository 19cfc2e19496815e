"""Code that runs in AWS Lambda and on runner hosts: stdlib + boto3 only, pure planners first."""
