"""Every door guarded: each attack of SECURITY.md's threat model, by actor, fails and leaves a record."""
