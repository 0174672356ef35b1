from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from training.management.lookup import by_name_or_id, figure
from training.models import Dataset, Evaluation, ModelVersion
from training.selectors import evaluation_data
from training.services import evaluation_predictions_write, evaluation_run


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
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="print the metrics as one JSON object on stdout, and nothing else",
        )
        parser.add_argument(
            "--predictions-out",
            metavar="FILE.csv",
            help=(
                "write one row per image: path, true_label, predicted_label, ood_score, "
                "ood_flagged, then one probability column per class"
            ),
        )

    def handle(
        self,
        *args,
        version,
        dataset,
        split,
        skip_unknown_classes,
        as_json: bool = False,
        predictions_out: str | None = None,
        **options,
    ):
        v = by_name_or_id(ModelVersion, version)
        d = by_name_or_id(Dataset, dataset)
        result = evaluation_run(
            version=v, dataset=d, split=split, skip_unknown=skip_unknown_classes
        )
        evaluation = result.evaluation
        if evaluation.status != Evaluation.Status.DONE or result.predictions is None:
            raise CommandError(f"Evaluation failed: {evaluation.error}")
        if predictions_out:
            try:
                with open(predictions_out, "w", newline="", encoding="utf-8") as f:
                    rows = evaluation_predictions_write(result.predictions, f)
            except OSError as exc:
                raise CommandError(f"Cannot write {predictions_out}: {exc}") from exc
        if as_json:  # the JSON object alone on stdout
            self.stdout.write(json.dumps(evaluation_data(evaluation), allow_nan=False))
            return
        if predictions_out:
            self.stdout.write(f"Wrote {rows} predictions to {predictions_out}.")
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
                f"  {c}: sensitivity {figure(f.get('sensitivity'))}, specificity "
                f"{figure(f.get('specificity'))}, precision {figure(f.get('precision'))}, F1 "
                f"{figure(f.get('f1'))}, AUC {figure(f.get('auc'))}"
            )
        self.stdout.write(f"confusion matrix (rows true, columns predicted; {m['classes']}):")
        for row in m["confusion_matrix"]:
            self.stdout.write("  " + " ".join(f"{n:6d}" for n in row))
