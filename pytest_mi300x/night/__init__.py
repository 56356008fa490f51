"""The night: one command that runs a whole nightly on a host (``pytest-mi300x night``).

stream.py names the builds in order (package index releases, per-commit images, a file),
with index.py and images.py asking the package index and the registry; state.py keeps what
lasts between nights outside the checkout; hostcheck.py checks the host first; pipeline.py
runs a night (steadiness with the reference build, the gate against the rolling baseline,
head-to-head confirmation); gating.py judges tonight's starts against the rolling baseline;
rolling.py promotes a green night's starts; search.py runs the culprit search from the
state; telling.py writes the job summary, annotations and outputs; issues.py opens or
updates the GitHub issue of a confirmed regression; estimate.py estimates a night's starts
and minutes (``pytest-mi300x plan --night``); command.py wires them for the CLI.
"""
