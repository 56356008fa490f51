"""python -m pytest_mi300x.cli"""

import sys

from pytest_mi300x.cli import main

sys.exit(main())
