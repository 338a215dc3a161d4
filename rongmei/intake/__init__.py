"""Getting content in: drops in the inbox (drops, names, safe_open), reading one into a bundle (bundles,
frontmatter), the automatic pre-checks, ingest into the store, and reprints pulled from upstream feeds.
"""

__all__ = ["bundles", "checks", "drops", "feeds", "frontmatter", "ingest", "moves", "names", "safe_open"]
