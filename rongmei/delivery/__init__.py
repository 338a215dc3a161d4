"""Taking an approved version out: the release, the delivery plan, deliveries to channels (with the
sign-off gate at the effect), retraction from every channel, and what a dead run left stranded.
"""

__all__ = ["deliveries", "gate", "grants", "leases", "plan", "release", "retraction", "stranded"]
