"""The Django project of the labeling app."""

# First thing in every Django process (server, manage.py commands, RQ workers): mlcore sets the
# environment that must precede the first torch import (the OpenMP wait policy).
import mlcore  # noqa: F401
