"""One typed config per command, shared by the CLI and the Python API."""

from bertfit.config.commands import *  # noqa: F403
from bertfit.config.commands import DEFAULT_MODEL, PRECISIONS, TRUNCATIONS, config_fields  # noqa: F401
