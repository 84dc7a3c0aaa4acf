"""How the engine reports progress and learns about cancellation.

The CLI adapts this to a progress bar, the Processing algorithm to ``QgsProcessingFeedback``.
"""
from __future__ import annotations

from .errors import Cancelled


class Progress:
    """No-op progress sink; subclass and override what you need."""

    def set_fraction(self, fraction: float) -> None:
        """Overall progress, 0.0 … 1.0."""

    def info(self, message: str) -> None:
        """A line for the log."""

    def warning(self, message: str) -> None:
        """Something the user should know about; the run goes on."""

    def is_cancelled(self) -> bool:
        return False

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop."""
        if self.is_cancelled():
            raise Cancelled()


class ProgressSlice(Progress):
    """One stage of a longer run: its 0…1 maps onto [start, end] of ``parent``; messages get ``prefix``."""

    def __init__(self, parent: Progress, start: float, end: float, prefix: str = ""):
        self.parent, self.start, self.end, self.prefix = parent, start, end, prefix

    def set_fraction(self, fraction: float) -> None:
        self.parent.set_fraction(self.start + (self.end - self.start) * max(0.0, min(1.0, fraction)))

    def info(self, message: str) -> None:
        self.parent.info(f"{self.prefix}{message}")

    def warning(self, message: str) -> None:
        self.parent.warning(f"{self.prefix}{message}")

    def is_cancelled(self) -> bool:
        return self.parent.is_cancelled()
