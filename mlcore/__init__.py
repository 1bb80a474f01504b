"""Image and model code for the labeling app: plain Python, no Django imports.

Importing any ``mlcore`` module first runs this file, so settings that must precede the first
torch import (the OpenMP runtime reads them once, when it starts) are made here, for every entry
point: ``python -m mlcore``, ``manage.py`` commands, RQ workers, benchmarks, notebooks.
"""

import os

# OpenMP threads that spin while waiting steal the cores of a shared (or small, virtual) machine
# from the threads doing the work: on the 2-core development VM, 2 spinning threads trained 8x
# slower than 1 thread; with PASSIVE, 2 threads were back to 1 thread's speed
# (docs/profiling.md). An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
