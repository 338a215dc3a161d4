"""Reach (传播监测): the report and its outputs."""
