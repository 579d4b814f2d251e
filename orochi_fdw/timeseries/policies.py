"""Chunk compression and the retention and compression policies' job bodies."""
