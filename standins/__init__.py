"""Stand-ins: local test doubles of outside services, reachable over real HTTP on 127.0.0.1.

They are not product code. The product talks to them exactly as it talks to the real service (the base URL is
configuration), so tests and `rongmei up` without credentials exercise the real client code paths.
"""
