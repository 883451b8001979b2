"""Training checkpoints (``checkpoint.pt``): the model-file format of :mod:`remul_ff.models.files` plus the trainer state.

Model files themselves are read and written by :mod:`remul_ff.models.files`; the names are
re-exported here for code written against the old location.
"""

from __future__ import annotations

from remul_ff.models.files import (  # noqa: F401 (re-exported)
    CHECKPOINT_FILE_KIND,
    FORMAT_VERSION,
    MODEL_FILE_KIND,
    load_file,
    load_model,
    model_from_payload,
    model_payload,
    save_file,
)

CHECKPOINT_KIND = CHECKPOINT_FILE_KIND
