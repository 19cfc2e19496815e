"""`estate doctor`: a read-only preflight of a real AWS account and GitHub App.

`quotas` and `checks` are pure: plain facts in, one verdict per check out (`checks` imports
only `estate.config`, `estate.derive`, `lambda_src.core` and the EC2 adapter's pure Spot-role
verdict; no boto3). `gather` is the thin shell that reads those facts through boto3 and the one
GitHub client (`lambda_src.github.client`) and never writes; `main` loads the stack as `preview`
does and wires the two. May import `estate.config`, `estate.derive`, `estate.preview` and
`lambda_src`; third-party: boto3/botocore (in `gather`).
"""
