"""The GitHub adapter: App JWT -> installation token, JIT runner configs, runner and job listings.

May import lambda_src.core, the standard library and PyJWT; never functions or host.
"""
