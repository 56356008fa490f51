"""What the server side saw during a measured run: the engine's own /metrics (engine.py) and
the GPUs' power, temperature, clocks and use (gpu.py)."""
