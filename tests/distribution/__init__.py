"""The distribution server and proof of play."""
