from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from training.models import Dataset, Evaluation, ModelVersion
from training.services import evaluation_create, evaluation_execute


class Command(BaseCommand):
    help = "Evaluate a model version on a registered dataset's split; stored as an Evaluation."

    def add_arguments(self, parser):
        parser.add_argument("version", help="model version name or id")
        parser.add_argument("--dataset", required=True, help="dataset name or id")
        parser.add_argument(
            "--split",
            default="test",
            choices=["test", "val", "train", "all"],
            help="all: every image (a dataset the model never saw)",
        )
        parser.add_argument(
            "--skip-unknown-classes",
            action="store_true",
            help="leave out images of classes the model does not know",
        )

    def handle(self, *args, version, dataset, split, skip_unknown_classes, **options):
        v = _get(ModelVersion, version)
        d = _get(Dataset, dataset)
        evaluation = evaluation_create(version=v, dataset=d, split=split, enqueue=False)
        evaluation = evaluation_execute(
            evaluation_id=evaluation.pk, skip_unknown=skip_unknown_classes
        )
        if evaluation.status != Evaluation.Status.DONE:
            raise CommandError(f"Evaluation failed: {evaluation.error}")
        m = evaluation.metrics
        self.stdout.write(
            self.style.SUCCESS(
                f"{v.name} on {d.name}/{split} (n={m['n']}): accuracy {m['accuracy']:.3f}, "
                f"balanced accuracy {(m.get('balanced_accuracy') or 0):.3f}, macro AUC "
                f"{(m.get('macro_auc') or 0):.3f}, ECE {m.get('ece', 0):.3f}"
            )
        )
        if m.get("skipped_classes"):
            self.stdout.write(
                f"  left out the classes the model does not know: {', '.join(m['skipped_classes'])}"
            )
        for c, f in m.get("per_class", {}).items():
            self.stdout.write(
                f"  {c}: sensitivity {_f(f.get('sensitivity'))}, specificity "
                f"{_f(f.get('specificity'))}, precision {_f(f.get('precision'))}, F1 "
                f"{_f(f.get('f1'))}, AUC {_f(f.get('auc'))}"
            )
        self.stdout.write(f"confusion matrix (rows true, columns predicted; {m['classes']}):")
        for row in m["confusion_matrix"]:
            self.stdout.write("  " + " ".join(f"{n:6d}" for n in row))


def _f(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def _get(model, key: str):
    obj = model.objects.filter(name=key).first()
    if obj is None and key.isdigit():
        obj = model.objects.filter(pk=int(key)).first()
    if obj is None:
        raise CommandError(f"No {model._meta.verbose_name} {key!r}.")
    return obj
