"""The test suite, shaped like the code: one folder per floor (docs/architecture.md)."""
