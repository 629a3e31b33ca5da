"""Deprecated name: the torch-free ``.pt`` reader lives in :mod:`charrnn.formats.pt`, the checkpoint
schema in :mod:`charrnn.checkpoint.schema`. ``read_pt`` stays importable from here."""

from .checkpoint.io import read_pt  # noqa: F401
from .checkpoint.schema import FORMAT, VERSION, Payload, validate_payload as parse_payload  # noqa: F401
from .formats.arrays import strided_copy  # noqa: F401
from .formats.pt import REFUSED  # noqa: F401
