"""Inference: the :class:`~.predictor.Predictor` (one forward and backward pass per batch) and the
rendering of its Grad-CAM maps."""
