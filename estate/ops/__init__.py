"""`status` and `report`: the live estate on one screen, and what it cost over a window.

Pure views (`status_view`, `report_view`: facts in, a JSON-ready dict and its text out; they
import only `lambda_src.core`, no third-party package) under a thin shell
(`target`: which ledger, queues, region and GitHub App a stack or a running `serve` means;
`gather`: the reads, boto3 and the one GitHub client; `main`: print, `--json`, `--plot`), which
may import `estate.config`, `estate.derive`, `estate.preview` and `lambda_src`.
"""
