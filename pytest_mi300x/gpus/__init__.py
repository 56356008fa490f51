"""GPUs of a host: discovery through amd-smi, rocm-smi or nvidia-smi (discovery.py) and their
parsers and health checks (smi.py), and leases that give each server its own GPUs across
xdist workers (leases.py)."""
