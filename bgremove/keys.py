"""The `bgremove-*` custom-metadata keys: the one place they are spelled.

Outputs, prepared inputs and per-upload overrides all speak through object metadata; every module
(the core, the operators' command, the offline stack, the bench) names a key through this module,
so a rename cannot leave one copy behind.
"""

from __future__ import annotations

PREFIX = "bgremove-"

# On every object the pipeline writes (outputs and prepared inputs): never an upload to process.
OUTPUT = "bgremove-output"
# Linking an output to what made it.
SOURCE = "bgremove-source"  # gs://bucket/name of the upload
SOURCE_GENERATION = "bgremove-source-generation"
JOB = "bgremove-job"
PREDICTION_ID = "bgremove-prediction-id"
MODEL_VERSION = "bgremove-model-version"
VARIANT = "bgremove-variant"  # the configured variant the object is
# On a prepared input (upright or converted copy of an upload, in the state bucket).
INPUT = "bgremove-input"

# Per-upload overrides a user sets on an upload (see variants.py).
BACKGROUND = "bgremove-background"
VARIANTS = "bgremove-variants"
OVERRIDES = (BACKGROUND, VARIANTS)

# The offline fleet stand-in's label on the PNGs it makes (a text chunk, not object metadata).
OFFLINE_FLEET = "bgremove-offline-fleet"


def is_ours(key: str) -> bool:
    """A key of this pipeline's vocabulary (not copied from a source to its outputs)."""
    return key.lower().startswith(PREFIX)
