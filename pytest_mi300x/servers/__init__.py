"""Server processes: spawn, readiness, log tail and tree kill (process.py), the session's pool
of servers, one per engine, model and flag set (pool.py), and the record of every server
started, so that what a killed session leaves running is reaped (records.py)."""
