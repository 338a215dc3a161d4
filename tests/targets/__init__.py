"""Targets: publishing to S3 (a real S3-protocol server)."""
