from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from training.services import (
    ModelImportError,
    PromotionNeedsExternalValidation,
    model_version_import,
    model_version_promote,
)


class Command(BaseCommand):
    help = (
        "Register a torchvision state_dict (one output per class), or a checkpoint exported "
        "from a model version, as a model version. "
        "Example: manage.py import_model resnet18.pt --arch resnet18 "
        "--classes normal,bacterial_pneumonia,viral_pneumonia,covid19 --promote "
        '--override-reason "first model, evaluated outside the app"'
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "path", help="state_dict file saved with torch.save(model.state_dict())"
        )
        parser.add_argument(
            "--arch",
            default="",
            help="torchvision architecture, e.g. resnet18 (taken from an "
            "exported checkpoint when omitted)",
        )
        parser.add_argument(
            "--classes",
            default="",
            help="comma-separated class labels, in the order of the model's outputs (taken from "
            "an exported checkpoint when omitted)",
        )
        parser.add_argument(
            "--normal-classes",
            default=None,
            help='comma-separated classes that mean "no finding" (any other class at or above '
            "its threshold flags a study; default: those named normal, no finding, healthy "
            "or negative; an empty value: none)",
        )
        parser.add_argument(
            "--sha256",
            default="",
            help="refuse the file unless its sha256 is this (from the export)",
        )
        parser.add_argument("--name", default="", help="version name (default: arch + timestamp)")
        parser.add_argument("--notes", default="")
        parser.add_argument("--promote", action="store_true", help="put it into production now")
        parser.add_argument("--reason", default="", help="why it is promoted (recorded)")
        parser.add_argument(
            "--override-reason",
            default="",
            help="with --promote: why it goes into production before any evaluation on a dataset "
            "other than its training data (required: a new import has none; recorded in the "
            "promotion history and the audit trail)",
        )

    def handle(self, *args, **options):
        if options["promote"] and not options["override_reason"].strip():
            # Checked first, so a refused promotion imports nothing.
            raise CommandError(
                '--promote needs --override-reason "...": a newly imported version has no '
                "evaluation on a dataset other than its training data, which promotion asks for. "
                "Import it without --promote, evaluate it (manage.py evaluate_model NAME "
                "--dataset D --split all), then promote it from its page; or say why it goes "
                "into production unvalidated with --override-reason (recorded)."
            )
        try:
            version = model_version_import(
                path=options["path"],
                architecture=options["arch"],
                classes=[c for c in options["classes"].split(",") if c.strip()],
                name=options["name"],
                notes=options["notes"],
                expected_sha256=options["sha256"],
                normal_classes=None
                if options["normal_classes"] is None
                else [c.strip() for c in options["normal_classes"].split(",") if c.strip()],
            )
        except ModelImportError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported model version {version.name!r} (id {version.pk}, {version.architecture}, "
                f"classes: {', '.join(version.class_labels)}, normal: "
                f"{', '.join(version.normal_classes) or 'none'}, sha256 {version.sha256[:12]}…)."
            )
        )
        if options["promote"]:
            try:
                model_version_promote(
                    version=version,
                    reason=options["reason"] or "imported with --promote",
                    override_reason=options["override_reason"],
                )
            except PromotionNeedsExternalValidation as exc:
                raise CommandError(f"Imported, but not promoted: {exc}") from exc
            self.stdout.write(self.style.SUCCESS(f"{version.name!r} is now in production."))
        else:
            self.stdout.write(
                "It is a candidate: evaluate it on a dataset other than its training data "
                "(manage.py evaluate_model), then promote it from its page."
            )
