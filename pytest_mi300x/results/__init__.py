"""What is written and read back: the typed result model (model.py), the one slug, writer and
JSON Lines reader (files.py), the one redaction (redact.py), the figures' names and
directions (metrics.py), what must match to compare (stack.py), and the history."""
