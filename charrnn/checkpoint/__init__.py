"""Checkpoints, in layers: names <- schema (one validation of a plain payload) <- I/O (load, save, resolve).

The readers beneath (:mod:`charrnn.formats`) turn ``.pt`` and ``.t7`` files into plain payloads.
"""

from .io import Checkpoint, convert_checkpoint, load_checkpoint, read_payload, read_pt, resolve_checkpoint, save_checkpoint
from .names import (CheckpointName, best_checkpoint, checkpoint_paths, checkpoint_stem, existing_checkpoints, list_checkpoints,
                    newest_checkpoint, remove_stale_temporaries)
from .resume import check_options
from .schema import FORMAT, VERSION, Payload, validate_payload

__all__ = ["Checkpoint", "CheckpointName", "best_checkpoint", "FORMAT", "Payload", "VERSION", "check_options", "checkpoint_paths", "checkpoint_stem", "convert_checkpoint",
           "existing_checkpoints", "list_checkpoints", "load_checkpoint", "newest_checkpoint", "read_payload",
           "read_pt", "remove_stale_temporaries", "resolve_checkpoint", "save_checkpoint", "validate_payload"]
