"""Readers for interaction logs and item metadata, and their preprocessing into splits."""
