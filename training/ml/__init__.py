"""The ML core: images, models, training and inference. Plain Python, no Django.

Subpackages: :mod:`.models` (architectures, weights, checkpoints, Grad-CAM preparation, inference
speed-ups), :mod:`.train` (data, the training loop, calibration, metrics, plots) and :mod:`.infer`
(the :class:`~training.ml.infer.predictor.Predictor` and heatmap rendering). Preprocessing,
memory and the base error are shared by all three.
"""
