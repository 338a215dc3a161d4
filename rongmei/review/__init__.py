"""Review and sign-off: renditions and previews for reviewers, the reviewers and their codes, the
sign-off form and its rules.
"""

__all__ = ["prepare", "reviewers", "signoff"]
