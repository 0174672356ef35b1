from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from training.models import Dataset, TrainingRun
from training.services import TrainingRejected, training_run_create, training_run_execute


class Command(BaseCommand):
    help = (
        "Fine-tune a model version on a registered dataset, in the foreground with a "
        "progress bar (or --queue it for a training worker). The result is a candidate "
        "model version with its test metrics."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="dataset name or id")
        parser.add_argument("--arch", required=True)
        parser.add_argument(
            "--weights",
            default="imagenet",
            help="imagenet (torchvision's cache/download), none, or a file path",
        )
        parser.add_argument("--strategy", choices=["head", "partial", "full"], default="head")
        parser.add_argument("--epochs", type=int, default=10)
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument(
            "--lr", type=float, default=None, help="default: head 1e-3, partial 3e-4, full 1e-4"
        )
        parser.add_argument("--warmup-head-epochs", type=int, default=0)
        parser.add_argument("--unfreeze-blocks", type=int, default=2)
        parser.add_argument(
            "--imbalance", choices=["weighted_loss", "sampler", "none"], default="weighted_loss"
        )
        parser.add_argument(
            "--hflip",
            action="store_true",
            help="allow horizontal flips (off: the heart is on the left)",
        )
        parser.add_argument("--gamma", type=float, default=None, help="gamma jitter (0.25; 0: off)")
        parser.add_argument("--label-smoothing", type=float, default=None, help="default 0.1")
        parser.add_argument(
            "--lr-schedule",
            choices=["cosine_step", "cosine_epoch"],
            default=None,
            help="cosine_step (default: warm-up, then per step) or cosine_epoch (no warm-up)",
        )
        parser.add_argument("--lr-warmup-epochs", type=float, default=None, help="default 1")
        parser.add_argument("--tta", action="store_true", help="test-time augmentation (4x eval)")
        parser.add_argument("--patience", type=int, default=3, help="early stopping; 0 = off")
        parser.add_argument("--max-steps", type=int, default=None, help="per epoch (quick runs)")
        parser.add_argument("--input-size", type=int, default=None)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda if any)")
        parser.add_argument("--threads", type=int, default=None)
        parser.add_argument(
            "--queue",
            action="store_true",
            help="send it to a training worker instead of running it here",
        )

    def handle(self, *args, **o):
        key = o["dataset"]
        dataset = Dataset.objects.filter(name=key).first() or (
            Dataset.objects.filter(pk=int(key)).first() if key.isdigit() else None
        )
        if dataset is None:
            raise CommandError(f"No dataset {key!r}: register it with register_dataset.")
        weights = None if o["weights"] in ("none", "") else o["weights"]
        config = {
            "arch": o["arch"],
            "weights": weights,
            "strategy": o["strategy"],
            "epochs": o["epochs"],
            "batch_size": o["batch_size"],
            "lr": o["lr"],
            "warmup_head_epochs": o["warmup_head_epochs"],
            "unfreeze_blocks": o["unfreeze_blocks"],
            "imbalance": o["imbalance"],
            "hflip": o["hflip"],
            "early_stopping_patience": o["patience"] or None,
            "max_steps_per_epoch": o["max_steps"],
            "input_size": o["input_size"],
            "seed": o["seed"],
            "device": o["device"],
            "num_threads": o["threads"],
            "tta": o["tta"],
        }
        recipe = ("gamma", "label_smoothing", "lr_schedule", "lr_warmup_epochs")
        config.update({k: o[k] for k in recipe if o[k] is not None})  # else TrainConfig's defaults
        if o["lr_schedule"] == "cosine_epoch" and o["lr_warmup_epochs"] is None:
            config["lr_warmup_epochs"] = 0
        try:
            run = training_run_create(dataset=dataset, config=config, enqueue=o["queue"])
        except TrainingRejected as exc:
            raise CommandError(str(exc)) from exc
        if o["queue"]:
            self.stdout.write(self.style.SUCCESS(f"Queued training run {run.pk}."))
            return
        run = training_run_execute(run_id=run.pk, on_progress=_ProgressBar(self.stdout))
        self._report(run)

    def _report(self, run: TrainingRun) -> None:
        if run.status == TrainingRun.Status.FAILED:
            raise CommandError(f"Training run {run.pk} failed: {run.error}")
        m = run.test_metrics
        self.stdout.write("")
        for epoch in run.history:
            self.stdout.write(
                f"epoch {epoch.get('epoch')}: train loss {epoch.get('train_loss', 0):.4f} "
                f"acc {epoch.get('train_acc', 0):.3f} | val loss {epoch.get('val_loss', 0):.4f} "
                f"acc {epoch.get('val_acc', 0):.3f}"
            )
        if m:
            self.stdout.write(
                f"test: accuracy {m['accuracy']:.3f}, macro AUC "
                f"{(m.get('macro_auc') or 0):.3f}, ECE {m.get('ece', 0):.3f} "
                f"(n={m.get('n')})"
            )
            for c, f in m.get("per_class", {}).items():
                sens, spec, auc = f.get("sensitivity"), f.get("specificity"), f.get("auc")
                self.stdout.write(
                    f"  {c}: sensitivity {_f(sens)}, specificity {_f(spec)}, AUC {_f(auc)}"
                )
        version = getattr(run, "model_version", None)
        state = "cancelled" if run.status == TrainingRun.Status.CANCELLED else "done"
        self.stdout.write(
            self.style.SUCCESS(
                f"Training run {run.pk} {state}."
                + (
                    f" Candidate model version {version.name!r} (id {version.pk})."
                    if version
                    else ""
                )
            )
        )


def _f(x) -> str:
    return "—" if x is None else f"{x:.3f}"


class _ProgressBar:
    """A tqdm bar per phase and epoch, fed by the run's progress callback."""

    def __init__(self, stream):
        self.stream = stream
        self.bar = None
        self.key = None

    def __call__(self, p: dict) -> None:
        from tqdm import tqdm

        key = (p.get("phase"), p.get("epoch"))
        if key != self.key:
            if self.bar is not None:
                self.bar.close()
            self.key = key
            desc = f"{p.get('phase')} {p.get('epoch')}/{p.get('epochs')}"
            self.bar = tqdm(total=p.get("steps") or 0, desc=desc, unit="step", leave=True)
        if self.bar is not None:
            self.bar.n = p.get("step") or 0
            postfix = {}
            if p.get("loss") is not None:
                postfix["loss"] = f"{p['loss']:.4f}"
            if p.get("eta_s") is not None:
                postfix["eta"] = f"{p['eta_s']:.0f}s"
            if p.get("images_per_s"):
                postfix["img/s"] = f"{p['images_per_s']:.1f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()
