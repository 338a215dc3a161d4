"""Getting content in: reading a drop (bundles), the automatic pre-checks, ingest into the store, and
reprints pulled from upstream feeds.
"""
