"""Builds against each other: a build with the engine args and env it runs with (builds.py),
server starts of builds as pytest sessions and their record (starts.py), two builds head to
head in interleaved starts (headtohead.py), and the bisect of an ordered range (bisect.py)."""
