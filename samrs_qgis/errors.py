"""Errors the engine raises on purpose.

Every message names the input at fault and how to fix it; callers (CLI, Processing algorithm) show
the message as it is, without a traceback.
"""
from typing import Optional


class SamrsError(Exception):
    """Base class of the engine's deliberate errors."""


class InputError(SamrsError):
    """An input (raster, box layer, checkpoint, option, output path) cannot be used as given."""


class BackendUnavailableError(SamrsError):
    """A segmentation backend cannot run here, e.g. torch or segment-anything is not installed.

    ``reason`` says what is missing; ``profile`` names the install profile that provides it (``light``: ONNX
    Runtime and OpenCV, ``full``: torch and the SAM packages; see :mod:`.environment.profiles`), or None. The
    message adds how to install that profile from a terminal; the plugin says it the QGIS way instead."""

    def __init__(self, reason: str, profile: Optional[str] = None):
        self.reason, self.profile = reason, profile
        super().__init__(reason + (f" {terminal_install_hint(profile)}" if profile else ""))


def missing_packages(what: str, exc: BaseException, profile: str) -> BackendUnavailableError:
    """The error for ``what`` needing packages that cannot be imported (``exc``), which ``profile`` installs."""
    return BackendUnavailableError(f"{what}, which cannot be imported here ({exc}).", profile)


def terminal_install_hint(profile: str) -> str:
    return (f"Install the {profile} profile into the plugin's environment for this Python: `python -m samrs_qgis "
            f"setup-env --profile {profile}` (in QGIS: Plugins › SAMRS › Set up models and dependencies…), or run "
            "`make setup` in a checkout.")


class Cancelled(SamrsError):
    """The caller asked to stop; outputs were rolled back."""

    def __init__(self, message: str = "The run was cancelled; no output was written."):
        super().__init__(message)
