"""Host profiles: the machines the suite runs on (the built-in ``cpu`` host and those of
``hosts.toml``), what decides whether two machines' figures compare (fingerprint.py)."""
