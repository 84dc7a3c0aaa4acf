"""Segmentation backends behind one interface (:class:`~.base.Backend`): SAM, and GrabCut without weights."""
