"""The study report: the same content as an HTML print view and as a PDF (reportlab)."""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import re
from pathlib import Path
from xml.sax.saxutils import escape

from django.utils import timezone

from diagnosis import selectors
from diagnosis.models import Prediction, Study
from diagnosis.results import (
    NO_OOD_CHECK,
    UNRELIABLE_WARNING,
    StudyResult,
    prediction_bars,
    prediction_shown_label,
)

logger = logging.getLogger(__name__)

NOTICE = (
    "Decision support only. The model's output and heatmap support, and do not replace, a "
    "radiologist's reading. Not for use as the sole basis of a diagnosis."
)


def report_context(study: Study) -> dict:
    items = []
    for image in study.images.all():
        predictions = list(image.predictions.all())
        prediction = predictions[0] if predictions else None
        items.append(
            {
                "image": image,
                "prediction": prediction,
                "shown_label": prediction_shown_label(prediction),
                "ood_line": _ood_line(prediction) if prediction and prediction.ood_flagged else "",
            }
        )
    readings = selectors.study_readings(study)
    result = selectors.study_result(study)
    return {
        "study": study,
        "result": result,
        "result_text": result_text(result, views=len(items)),
        # No OOD reference: say so, or no warning would read as a check passed.
        "no_ood_check": no_ood_check_text(result) if result.unchecked_versions else "",
        "items": items,
        "reading": next((r for r in readings if r.is_current), None),
        "readings": readings,
        "notice": NOTICE,
        "generated_at": timezone.now(),
    }


def result_text(result: StudyResult, *, views: int) -> str:
    """The study result in one sentence (plain text; the templates and the PDF escape it)."""
    if result.label is None:
        return {
            "failed": "Needs attention: the analysis of a view failed.",
            "pending": "The analysis is not finished.",
        }.get(result.status, "No analysis.")
    text = ""
    if result.unreliable:
        text = f"{UNRELIABLE_WARNING}: {'; '.join(result.unreliable_reasons)}. "
    if result.shown_label != result.label:  # an unreliable normal: never printed as normal
        text += f"Model result: {result.shown_label}"
    else:
        text += f"Model result: {result.label} ({result.label_probability:.3f})"
    text += ", flagged: " + ", ".join(result.flagged_classes) if result.flagged else ", not flagged"
    if views > 1:
        text += f"; {views} views combined (per class the highest probability)"
    text += f"; model version {', '.join(result.model_versions)}."
    if result.status == "failed":
        text += " Needs attention: the analysis of a view failed."
    elif result.status == "pending":
        text += " Another view is still being analysed."
    return text


def no_ood_check_text(result: StudyResult) -> str:
    """That the result's version(s) have no OOD reference (plain text, for the PDF)."""
    versions = ", ".join(result.unchecked_versions)
    return f"Not checked for images unlike the training data (version {versions}). " + (
        NO_OOD_CHECK.replace("`", "")
    )


def _ood_line(prediction: Prediction) -> str:
    """One image's out-of-distribution warning (plain text)."""
    text = UNRELIABLE_WARNING + "."
    reasons = "; ".join(str(r) for r in prediction.ood_reasons or [])
    if reasons:
        text += f" Reasons: {reasons}."
    if prediction.ood_score is not None and prediction.ood_threshold is not None:
        text += f" Score {prediction.ood_score:.1f}, threshold {prediction.ood_threshold:.1f}."
    return text


def render_pdf(study: Study, *, generated_by=None) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        Image as RLImage,
    )
    from reportlab.platypus import (
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    ctx = report_context(study)
    styles = getSampleStyleSheet()
    font = _unicode_font()
    for style in styles.byName.values():
        if getattr(style, "fontName", "").startswith("Helvetica"):
            style.fontName = _FONT_FACES[style.fontName.removeprefix("Helvetica")].format(font)
    cell_style = ParagraphStyle("cell", parent=styles["Normal"], fontSize=9, leading=11)

    def cell(value: object) -> Paragraph:
        # Data in table cells as escaped Paragraphs too: one rule for every value, and long
        # names wrap inside their column instead of running over the page.
        return Paragraph(_markup(value), cell_style)

    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
        title=_plain(f"Chest X-ray report {study.accession_number}"),
    )
    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
            ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f6")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("FONTSIZE", (0, 0), (-1, -1), 9),
            ("FONTNAME", (0, 0), (-1, -1), font),
        ]
    )
    patient = study.patient
    story = [
        Paragraph(f"Chest X-ray report — {_markup(study.accession_number)}", styles["Title"]),
        Paragraph(NOTICE, styles["Italic"]),
        Spacer(1, 4 * mm),
        Table(
            [
                ["Patient ID", cell(patient.mrn), "Name", cell(patient.name or "—")],
                [
                    "Sex",
                    cell(patient.get_sex_display() or "—"),
                    "Birth date",
                    patient.birth_date.isoformat() if patient.birth_date else "—",
                ],
                [
                    "Study date",
                    study.study_date.isoformat() if study.study_date else "—",
                    "View",
                    cell(study.get_view_display() or "—"),
                ],
                [
                    "Priority",
                    cell(study.get_priority_display()),
                    "Uploaded",
                    f"{timezone.localtime(study.created_at):%Y-%m-%d %H:%M}",
                ],
            ],
            colWidths=[28 * mm, 55 * mm, 28 * mm, 55 * mm],
            style=grid,
        ),
        Spacer(1, 5 * mm),
        Paragraph("Study result", styles["Heading2"]),
        *(
            Paragraph(_markup(text), styles["Normal"])
            for text in (ctx["result_text"], ctx["no_ood_check"])
            if text
        ),
        Spacer(1, 4 * mm),
    ]
    for item in ctx["items"]:
        image, prediction = item["image"], item["prediction"]
        picture = prediction.overlay if prediction and prediction.overlay else image.display
        try:
            with picture.open("rb") as fh:
                data = io.BytesIO(fh.read())
            width = 120 * mm
            height = width * image.height / max(1, image.width)
            if height > 130 * mm:
                width, height = width * 130 * mm / height, 130 * mm
            story.append(RLImage(data, width=width, height=height))
        except (FileNotFoundError, ValueError):  # no file on record, or none on disk
            story.append(Paragraph("(image file missing from storage)", styles["Normal"]))
        except OSError as exc:  # the storage itself fails: the rest of the report still prints
            logger.error("report %s: cannot read %s: %s", study.pk, picture.name, exc)
            story.append(Paragraph("(image file unreadable in storage)", styles["Normal"]))
        caption = "X-ray with the Grad-CAM overlay" if picture is not image.display else "X-ray"
        story.append(Paragraph(caption, styles["Italic"]))
        story.append(Spacer(1, 3 * mm))
        if prediction is None or prediction.status != Prediction.Status.DONE:
            status = prediction.status_message if prediction else "No analysis."
            story.append(Paragraph(f"This image: {_markup(status)}", styles["Normal"]))
            continue
        version = prediction.model_version
        rows = [["Class", "Probability", "Threshold"]] + [
            [cell(label), f"{p:.3f}", f"{thr:.2f}" + (" (flagged)" if flagged else "")]
            for label, p, thr, flagged in prediction_bars(prediction)
        ]
        if prediction.ood_flagged:
            story.append(Paragraph(_markup(_ood_line(prediction)), styles["Normal"]))
        story += [
            Paragraph(
                f"This image: <b>{_markup(prediction_shown_label(prediction))}</b> — model version "
                f"{_markup(version.name)} ({_markup(version.architecture)}), "
                f"{_markup(prediction.cam_method)} heatmap of "
                f"“{_markup(prediction.cam_class)}”",
                styles["Normal"],
            ),
            Spacer(1, 2 * mm),
            Table(
                rows,
                colWidths=[60 * mm, 30 * mm, 30 * mm],
                style=TableStyle(
                    [
                        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6")),
                        ("FONTSIZE", (0, 0), (-1, -1), 9),
                        ("FONTNAME", (0, 0), (-1, -1), font),
                    ]
                ),
            ),
            Spacer(1, 5 * mm),
        ]
    story.append(Paragraph("Radiologist's reading", styles["Heading2"]))
    reading = ctx["reading"]
    if reading is None:
        story.append(Paragraph("Not yet read.", styles["Normal"]))
    else:
        agreement = {
            True: "agrees with the model",
            False: "overrides the model",
            None: "no model result",
        }[reading.agrees_with_model]
        signer = reading.radiologist.get_full_name() or reading.radiologist
        story += [
            Paragraph(
                f"Final label: <b>{_markup(reading.final_label)}</b> ({agreement})",
                styles["Normal"],
            ),
            Paragraph(
                f"Signed by {_markup(signer)} "
                f"on {timezone.localtime(reading.signed_at):%Y-%m-%d %H:%M}"
                + (" (amendment)" if reading.amends_id else ""),
                styles["Normal"],
            ),
        ]
        if reading.notes:
            story.append(
                Paragraph(f"Notes: {_markup(reading.notes, newlines=True)}", styles["Normal"])
            )
    by = f" by {_markup(generated_by)}" if generated_by is not None else ""
    story += [
        Spacer(1, 6 * mm),
        Paragraph(
            f"Generated {timezone.localtime(ctx['generated_at']):%Y-%m-%d %H:%M}{by}. {NOTICE}",
            styles["Italic"],
        ),
    ]
    doc.build(story)
    return buf.getvalue()


# ReportLab's standard fonts cover Latin-1 only: names in Greek, Cyrillic, Arabic, Hebrew... would
# print as black boxes. DejaVu Sans covers them; it ships with matplotlib (a pinned dependency),
# so no system font is needed. Faces by the suffix of the Helvetica face a sample style uses.
_FONT_FACES = {
    "": "{}",
    "-Bold": "{}-Bold",
    "-Oblique": "{}-Oblique",
    "-BoldOblique": "{}-BoldOblique",
}


@functools.cache
def _unicode_font() -> str:
    """Register DejaVu Sans (four faces) with ReportLab once; its family name, or Helvetica when
    matplotlib's font files cannot be found."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return "Helvetica"
    folder = Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf"
    family = "DejaVuSans"
    try:
        for suffix, (bold, italic) in {
            "": (0, 0),
            "-Bold": (1, 0),
            "-Oblique": (0, 1),
            "-BoldOblique": (1, 1),
        }.items():
            pdfmetrics.registerFont(TTFont(family + suffix, str(folder / f"{family}{suffix}.ttf")))
            addMapping(family, bold, italic, family + suffix)
    except OSError:
        logger.warning(
            "DejaVu Sans not found under %s: PDF reports use Helvetica (Latin-1 only)", folder
        )
        return "Helvetica"
    return family


# C0 controls and DEL (tab and newline kept where they mean something): shown as U+FFFD, so a
# stored value from before input validation prints visibly instead of as an invisible glyph.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_MARKUP_ENTITIES = {'"': "&quot;", "'": "&#39;"}


def _plain(value: object) -> str:
    """Text for PDF metadata (not markup): one line, control characters replaced."""
    return _CONTROL.sub("\ufffd", re.sub(r"\s+", " ", str(value)))


def _markup(value: object, *, newlines: bool = False) -> str:
    """A value from a user, a file or the database as literal text in ReportLab's Paragraph
    mini-markup: ``<``, ``>``, ``&`` and both quotes escaped, so nothing in it becomes a tag (an
    image read from the server's disk, a link, hidden text) or breaks out of an attribute.
    ``newlines`` keeps line breaks (notes) as ``<br/>``."""
    text = escape(_CONTROL.sub("\ufffd", str(value).replace("\r\n", "\n")), _MARKUP_ENTITIES)
    return text.replace("\n", "<br/>") if newlines else text
