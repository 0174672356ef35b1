"""Model building: architectures and their heads, weights files, checkpoints, Grad-CAM preparation
and inference speed-ups."""
