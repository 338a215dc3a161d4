"""Where published files land: the target interface, a directory, S3, and the choice between them.
"""

__all__ = ["base", "directory", "s3", "s3_multipart", "selection"]
