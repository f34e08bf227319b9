"""Prompt files (front-matter + Jinja), their output schemas, and request building."""
