"""`python -m mlcore ...`: see mlcore/cli.py."""

import sys

from mlcore.cli import main

sys.exit(main())
