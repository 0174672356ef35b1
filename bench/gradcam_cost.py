"""Where the Predictor's time goes: forward alone vs Grad-CAM as the app runs it vs Grad-CAM with
the backward pass stopped at the target layer.

    .venv/bin/python bench/gradcam_cost.py --arch mobilenet_v2 [--threads 2] [--rounds 5]

The app's Predictor makes the *input* require grad (its parameters are frozen), so autograd
records the whole network and backward runs down to the input, although Grad-CAM only needs the
gradient at the target layer. The "leaf" variant makes the target layer's output a leaf that
requires grad (a forward hook registered before GradCAM's own), so nothing below it is recorded
and backward stops there. Same CAM, same probabilities (checked). Variants are interleaved
(ABCABC...) so a busy machine skews them alike; CPU time is reported beside wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Run as a script, Python puts bench/ first on sys.path: put the repo there instead, so
# `bench.*`, `training`, `diagnosis` resolve to the packages and nothing in bench/ shadows them.
if sys.path and Path(sys.path[0]).resolve() == REPO / "bench":
    sys.path[0] = str(REPO)
elif str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="mobilenet_v2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=10)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from pytorch_grad_cam import GradCAM

    from training.ml.infer.predictor import Predictor, _ArgmaxTarget
    from training.ml.models.architectures import build_model, default_preprocessing
    from training.ml.preprocessing import batch_model_input

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    prep = default_preprocessing(args.arch)
    predictor = Predictor(
        build_model(args.arch, 2),
        arch=args.arch,
        classes=["a", "b"],
        preprocessing=prep,
        device="cpu",
    )
    model, layer = predictor.model, predictor._target_layer
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (prep.input_size,) * 2, dtype=np.uint8))
    x = batch_model_input([image], prep)

    def forward_only() -> None:
        with torch.inference_mode():
            model(x)

    def app_predict() -> np.ndarray:
        return predictor.predict([image])[0].cam

    def leaf_predict() -> np.ndarray:
        def make_leaf(_module, _inputs, output):
            return output.detach().requires_grad_(True)

        handle = layer.register_forward_hook(make_leaf)
        try:
            with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
                maps = cam(input_tensor=x, targets=[_ArgmaxTarget()])
                cam.outputs = None
        finally:
            handle.remove()
        return maps[0]

    same = np.allclose(app_predict(), leaf_predict(), atol=1e-4)
    variants = {
        "forward_only": forward_only,
        "app_predict": app_predict,
        "leaf_predict": leaf_predict,
    }
    wall = {k: 0.0 for k in variants}
    cpu = {k: 0.0 for k in variants}
    for fn in variants.values():
        fn()
    for _ in range(args.rounds):
        for name, fn in variants.items():
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.per_round):
                fn()
            wall[name] += time.perf_counter() - w0
            cpu[name] += time.process_time() - c0
    n = args.rounds * args.per_round
    print(f"{args.arch}, {args.threads} threads, {n} images each; CAMs equal: {same}")
    for name in variants:
        print(
            f"  {name:38s} wall {wall[name] / n * 1000:7.1f} ms   cpu {cpu[name] / n * 1000:7.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
