"""The study report: the same content as an HTML print view and as a PDF (reportlab)."""

from __future__ import annotations

import io

from django.utils import timezone

from diagnosis import selectors
from diagnosis.models import Prediction, Study

NOTICE = (
    "Decision support only. The model's output and heatmap support, and do not replace, a "
    "radiologist's reading. Not for use as the sole basis of a diagnosis."
)


def report_context(study: Study) -> dict:
    items = []
    for image in study.images.all():
        predictions = list(image.predictions.all())
        items.append({"image": image, "prediction": predictions[0] if predictions else None})
    readings = selectors.study_readings(study)
    return {
        "study": study,
        "items": items,
        "reading": next((r for r in readings if r.is_current), None),
        "readings": readings,
        "notice": NOTICE,
        "generated_at": timezone.now(),
    }


def render_pdf(study: Study, *, generated_by=None) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
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
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm,
                            topMargin=16 * mm, bottomMargin=16 * mm,
                            title=f"Chest X-ray report {study.accession_number}")
    grid = TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef2f6")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("FONTSIZE", (0, 0), (-1, -1), 9),
    ])
    patient = study.patient
    story = [
        Paragraph(f"Chest X-ray report — {study.accession_number}", styles["Title"]),
        Paragraph(NOTICE, styles["Italic"]),
        Spacer(1, 4 * mm),
        Table([
            ["Patient ID", patient.mrn, "Name", patient.name or "—"],
            ["Sex", patient.get_sex_display() or "—", "Birth date",
             patient.birth_date.isoformat() if patient.birth_date else "—"],
            ["Study date", study.study_date.isoformat() if study.study_date else "—", "View",
             study.get_view_display() or "—"],
            ["Priority", study.get_priority_display(), "Uploaded",
             f"{timezone.localtime(study.created_at):%Y-%m-%d %H:%M}"],
        ], colWidths=[28 * mm, 55 * mm, 28 * mm, 55 * mm], style=grid),
        Spacer(1, 5 * mm),
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
        except (FileNotFoundError, ValueError):
            story.append(Paragraph("(image file missing from storage)", styles["Normal"]))
        caption = "X-ray with the Grad-CAM overlay" if picture is not image.display else "X-ray"
        story.append(Paragraph(caption, styles["Italic"]))
        story.append(Spacer(1, 3 * mm))
        if prediction is None or prediction.status != Prediction.Status.DONE:
            status = prediction.status_message if prediction else "No analysis."
            story.append(Paragraph(f"Model result: {status}", styles["Normal"]))
            continue
        version = prediction.model_version
        rows = [["Class", "Probability", "Threshold"]] + [
            [label, f"{p:.3f}", f"{version.threshold_for(label):.2f}"]
            for label, p in prediction.sorted_probabilities
        ]
        story += [
            Paragraph(f"Model result: <b>{prediction.label}</b> — model version {version.name} "
                      f"({version.architecture}), {prediction.cam_method} heatmap of "
                      f"“{prediction.cam_class}”", styles["Normal"]),
            Spacer(1, 2 * mm),
            Table(rows, colWidths=[60 * mm, 30 * mm, 30 * mm], style=TableStyle([
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f6")),
                ("FONTSIZE", (0, 0), (-1, -1), 9),
            ])),
            Spacer(1, 5 * mm),
        ]
    story.append(Paragraph("Radiologist's reading", styles["Heading2"]))
    reading = ctx["reading"]
    if reading is None:
        story.append(Paragraph("Not yet read.", styles["Normal"]))
    else:
        agreement = {True: "agrees with the model", False: "overrides the model",
                     None: "no model result"}[reading.agrees_with_model]
        story += [
            Paragraph(f"Final label: <b>{reading.final_label}</b> ({agreement})", styles["Normal"]),
            Paragraph(f"Signed by {reading.radiologist.get_full_name() or reading.radiologist} "
                      f"on {timezone.localtime(reading.signed_at):%Y-%m-%d %H:%M}"
                      + (" (amendment)" if reading.amends_id else ""), styles["Normal"]),
        ]
        if reading.notes:
            story.append(Paragraph(f"Notes: {_escape(reading.notes)}", styles["Normal"]))
    by = f" by {generated_by}" if generated_by is not None else ""
    story += [Spacer(1, 6 * mm), Paragraph(
        f"Generated {timezone.localtime(ctx['generated_at']):%Y-%m-%d %H:%M}{by}. {NOTICE}",
        styles["Italic"])]
    doc.build(story)
    return buf.getvalue()


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", "<br/>"))
