"""Driving load and measuring it: the streaming client (client.py, the hot path), the
client's view of its own health, several load processes, the figures of a run as vllm bench
serve defines them, and the measurer that runs a test's repetitions and writes its result."""
