"""The estate's policy pack: the security defaults as rules, shared by `pulumi preview
--policy-pack policy` and `python -m estate preview`."""
