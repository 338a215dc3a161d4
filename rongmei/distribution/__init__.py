"""The distribution server terminals and readers poll: static files, the access log, the plays
endpoint, and the terminals with their grants and proof of play.
"""
