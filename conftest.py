"""Repository root conftest.

The plugin itself loads through its ``pytest11`` entry point (``pip install -e .``),
so suites and tests see the same plugin a user's checkout does. This file only
keeps pytest from collecting the benchmarks folder, whose scripts print figures
and are run by hand (``python benchmarks/NAME.py``).
"""

collect_ignore = ["benchmarks"]
