"""Getting content in: drops in the inbox (drops, names, safe_open), reading one into a bundle (bundles,
frontmatter), the automatic pre-checks, ingest into the store (and what it does when the store cannot take a drop:
outages), and reprints pulled from upstream feeds.
"""

__all__ = ["bundles", "checks", "drops", "feeds", "frontmatter", "ingest", "moves", "names", "outages", "safe_open"]
