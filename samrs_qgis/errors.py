"""Errors the engine raises on purpose.

Every message names the input at fault and how to fix it; callers (CLI, Processing algorithm) show
the message as it is, without a traceback.
"""


class SamrsError(Exception):
    """Base class of the engine's deliberate errors."""


class InputError(SamrsError):
    """An input (raster, box layer, checkpoint, option, output path) cannot be used as given."""


class BackendUnavailableError(SamrsError):
    """A segmentation backend cannot run here, e.g. torch or segment-anything is not installed."""


class Cancelled(SamrsError):
    """The caller asked to stop; outputs were rolled back."""

    def __init__(self, message: str = "The run was cancelled; no output was written."):
        super().__init__(message)
