"""Renditions: covers, cards, transcodes, loudspeaker audio, spoken articles (real ffmpeg)."""
