"""pytest integration: the hooks (hooks.py, the pytest11 entry point), the fixtures, the options
and ini keys, xdist scheduling, the session table, live progress and pytest-benchmark rounds.
Nothing here is needed to run a server or a load without pytest (see session.py)."""
