"""Intake: reading drops, front matter, pre-checks, ingest, feed reprints."""
