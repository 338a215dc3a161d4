"""Reach (传播监测): numbers from every channel, the report, and its outputs.
"""
