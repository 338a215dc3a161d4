"""Taking an approved version out: the release, the delivery plan, deliveries to channels (with the
sign-off gate at the effect) and retraction from every channel.
"""

__all__ = ["deliveries", "gate", "grants", "leases", "plan", "release", "retraction"]
