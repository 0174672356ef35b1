"""The study-level result: one rule that combines the predictions of a study's images (views).

Plain Python, no Django: it reads the attributes of the predictions it is given (``pk``,
``image_id``, ``status``, ``probabilities``, ``queued_at``, ``model_version`` with
``class_labels``, ``name``, ``is_normal_label(label)`` and ``threshold_for(label)``), so every
surface (worklist, flag, study page, reading, report, PDF, API) calls :func:`study_result` and
shows the same thing.

The rule:

- Each image counts with its *current* prediction: its most recently queued one (earlier ones
  are history).
- ``status``: ``failed`` when any view's analysis failed (it needs attention), else ``pending``
  while any view is queued or running, else ``done``; ``none`` for a study without analysis.
- ``probabilities``: per class, the maximum over the views' finished predictions.
- ``flagged_classes``: every abnormal class (not one of its version's normal classes) that reaches
  its version's operating threshold on some view, highest first; ``flagged`` when there is one.
- ``label``: the top flagged class if any, else the top class of ``probabilities``.
- ``driving_image``: the image whose prediction gives the label its probability.
- ``prediction_ids``: the finished predictions the result is made of. A reading records them and
  is refused when they changed (a view finished later, a re-analysis) before it was signed.
- ``unreliable``: some view's current, finished prediction is flagged out-of-distribution
  (``ood_flagged``: its in-distribution score is over its version's threshold, or an image check
  says it is no radiograph); ``unreliable_reasons`` are those predictions' reasons, each once.
  An unreliable result is never a confident normal: when its label is a normal class, every
  surface shows :data:`UNRELIABLE_LABEL` instead (``shown_label``). An abnormal label stays
  shown (and flagged when over its threshold), marked unreliable.
- ``unchecked_versions``: the versions of the current, finished predictions made without an
  out-of-distribution reference (no threshold: only the image checks ran). Every surface says so
  (:data:`NO_OOD_CHECK`): no warning there does not mean the image passed a check.
- ``needs_attention``: a view's analysis failed, or the result is unreliable. The worklist reads
  unread studies that need attention first, failed and unreliable alike (by priority, then
  waiting time), before the flagged ones: both say the model's answer cannot be taken as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DONE, FAILED, QUEUED, RUNNING = "done", "failed", "queued", "running"
# What a surface shows instead of a normal label when the result is unreliable.
UNRELIABLE_LABEL = "unreliable — unlike the training data"
UNRELIABLE_WARNING = "Unlike the training data — result unreliable"
# What a surface says of a result made by a version without an OOD reference.
NO_OOD_CHECK = (
    "This model version has no out-of-distribution check: images unlike its training data are "
    "not flagged. An admin can fit one with `manage.py calibrate`."
)


@dataclass(frozen=True)
class StudyResult:
    status: str  # done | pending | failed | none
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    flagged: bool = False
    flagged_classes: list[str] = field(default_factory=list)
    driving_image: int | None = None
    prediction_ids: list[int] = field(default_factory=list)
    model_version: str | None = None  # the version behind the label
    model_versions: list[str] = field(default_factory=list)
    # Per class, the threshold of the version whose prediction gives the class its probability.
    thresholds: dict[str, float] = field(default_factory=dict)
    normal_classes: list[str] = field(default_factory=list)
    unreliable: bool = False
    unreliable_reasons: list[str] = field(default_factory=list)
    unchecked_versions: list[str] = field(default_factory=list)
    # The current finished predictions flagged out-of-distribution.
    unreliable_predictions: list[Any] = field(default_factory=list, repr=False, compare=False)
    driving_prediction: Any = field(default=None, repr=False, compare=False)

    @property
    def needs_attention(self) -> bool:
        return self.status == FAILED or self.unreliable

    @property
    def shown_label(self) -> str | None:
        """The label as surfaces show it: never a normal class when the result is unreliable."""
        if self.unreliable and (self.label is None or self.label in self.normal_classes):
            return UNRELIABLE_LABEL
        return self.label

    @property
    def label_probability(self) -> float | None:
        return self.probabilities.get(self.label) if self.label else None

    def bars(self) -> list[tuple[str, float, float, bool]]:
        """(class, probability, threshold, flagged) for each class, highest probability first."""
        return [
            (label, p, self.thresholds.get(label, 0.5), label in self.flagged_classes)
            for label, p in sorted(self.probabilities.items(), key=lambda kv: -kv[1])
        ]

    def as_dict(self) -> dict:
        """The API's ``result`` object."""
        return {
            "status": self.status,
            "label": self.label,
            "probabilities": dict(self.probabilities),
            "flagged": self.flagged,
            "flagged_classes": list(self.flagged_classes),
            "driving_image": self.driving_image,
            "prediction_ids": list(self.prediction_ids),
            "model_version": self.model_version,
            "model_versions": list(self.model_versions),
            "thresholds": dict(self.thresholds),
            "unreliable": self.unreliable,
            "unreliable_reasons": list(self.unreliable_reasons),
            "shown_label": self.shown_label,
            "needs_attention": self.needs_attention,
            "ood": {
                "checked": not self.unchecked_versions,
                "unchecked_versions": list(self.unchecked_versions),
                "note": NO_OOD_CHECK if self.unchecked_versions else None,
            },
        }


def current_predictions(predictions: Iterable[Any]) -> list[Any]:
    """The current prediction of each image (its most recently queued one), in image order of
    first appearance."""
    current: dict[int, Any] = {}
    for p in predictions:
        held = current.get(p.image_id)
        if held is None or (p.queued_at, p.pk) > (held.queued_at, held.pk):
            current[p.image_id] = p
    return list(current.values())


def study_result(predictions: Iterable[Any]) -> StudyResult:
    """The result of a study from its predictions (all of them, history included: only each
    image's current one counts). See the module's docstring for the rule."""
    current = current_predictions(predictions)
    if not current:
        return StudyResult(status="none")
    status = _overall_status(current)
    done = sorted(
        (
            p
            for p in current
            if p.status == DONE and p.probabilities and p.model_version is not None
        ),
        key=lambda p: p.pk,
    )
    unreliable = [p for p in done if getattr(p, "ood_flagged", False)]
    reasons = list(
        dict.fromkeys(
            r for p in unreliable for r in (p.ood_reasons or ["unlike the training data"])
        )
    )
    if not done:
        return StudyResult(status=status)

    best, flagged = _class_maxima(done)
    order = _class_order(done, best)
    probabilities = {c: best[c][0] for c in order}
    flagged_classes = sorted(flagged, key=lambda c: (-flagged[c], order.index(c)))
    if flagged_classes:
        label = flagged_classes[0]
    else:
        label = max(order, key=lambda c: (probabilities[c], -order.index(c)))
    driver = best[label][1]
    thresholds = {c: best[c][1].model_version.threshold_for(c) for c in order}
    normal = [c for c in order if best[c][1].model_version.is_normal_label(c)]
    versions: list[str] = []
    for p in done:
        if p.model_version.name not in versions:
            versions.append(p.model_version.name)
    unchecked = [
        v for v in versions if any(_unchecked(p) for p in done if p.model_version.name == v)
    ]
    return StudyResult(
        status=status,
        label=label,
        probabilities=probabilities,
        flagged=bool(flagged_classes),
        flagged_classes=flagged_classes,
        driving_image=driver.image_id,
        prediction_ids=[p.pk for p in done],
        model_version=driver.model_version.name,
        model_versions=versions,
        thresholds=thresholds,
        normal_classes=normal,
        unreliable=bool(unreliable),
        unreliable_reasons=reasons,
        unchecked_versions=unchecked,
        unreliable_predictions=unreliable,
        driving_prediction=driver,
    )


def _unchecked(prediction: Any) -> bool:
    """Made without an OOD reference: with one, the threshold is stored even when the score is
    not finite (see diagnosis.worker.finish.ood_fields)."""
    return getattr(prediction, "ood_threshold", None) is None


def prediction_ood_checked(prediction: Any) -> bool | None:
    """Whether one image's finished prediction was scored against an OOD reference (None when
    it has not finished)."""
    if prediction is None or prediction.status != DONE or prediction.model_version is None:
        return None
    return not _unchecked(prediction)


def _overall_status(current: list[Any]) -> str:
    """failed when any view failed, else pending while any is queued or running, else done."""
    statuses = {p.status for p in current}
    if FAILED in statuses:
        return FAILED
    if statuses & {QUEUED, RUNNING}:
        return "pending"
    return DONE


def _class_maxima(done: list[Any]) -> tuple[dict[str, tuple[float, Any]], dict[str, float]]:
    """Per class, the maximum probability over the finished views and the prediction that gives
    it; and per abnormal class that reaches its version's threshold on some view, its maximum
    probability among those views."""
    best: dict[str, tuple[float, Any]] = {}  # class -> (max probability, its prediction)
    flagged: dict[str, float] = {}
    for p in done:
        version = p.model_version
        for label, prob in p.probabilities.items():
            prob = float(prob)
            if label not in best or prob > best[label][0]:
                best[label] = (prob, p)
            if not version.is_normal_label(label) and prob >= version.threshold_for(label):
                flagged[label] = max(prob, flagged.get(label, 0.0))
    return best, flagged


def _class_order(done: list[Any], best: dict[str, tuple[float, Any]]) -> list[str]:
    """The classes in the models' output order (first model first); others last."""
    order: list[str] = []
    for p in done:
        order += [c for c in p.model_version.class_labels if c in best and c not in order]
    order += [c for c in best if c not in order]
    return order


def prediction_bars(prediction: Any) -> list[tuple[str, float, float, bool]]:
    """One image's own result as (class, probability, threshold, flagged), highest first:
    flagged (drawn red) only for an abnormal class at or above its threshold."""
    if (
        prediction is None
        or prediction.status != DONE
        or not prediction.probabilities
        or prediction.model_version is None
    ):
        return []
    version = prediction.model_version
    return [
        (
            label,
            float(p),
            version.threshold_for(label),
            not version.is_normal_label(label) and float(p) >= version.threshold_for(label),
        )
        for label, p in sorted(prediction.probabilities.items(), key=lambda kv: -float(kv[1]))
    ]


def prediction_shown_label(prediction: Any) -> str | None:
    """One image's label as surfaces show it: :data:`UNRELIABLE_LABEL` instead of a normal
    class when that image is flagged out-of-distribution."""
    if prediction is None or prediction.status != DONE or not prediction.label:
        return None
    version = prediction.model_version
    if getattr(prediction, "ood_flagged", False) and (
        version is None or version.is_normal_label(prediction.label)
    ):
        return UNRELIABLE_LABEL
    return prediction.label


@dataclass(frozen=True)
class ReanalysisNotice:
    """That a study's result changed by a re-analysis: the version and date of the newest
    re-read view, and what the study's result said before."""

    version: str | None
    at: Any
    previous_status: str
    previous_label: str | None
    previous_version: str | None
    pending: bool = False  # the re-analysis is still queued or running


def reanalysis_notice(predictions: Iterable[Any]) -> ReanalysisNotice | None:
    """None unless some view's current prediction replaced an earlier one. The previous result
    is the study's result without those replacing predictions (same rule, one step back)."""
    predictions = list(predictions)
    current = current_predictions(predictions)
    replaced = {
        c.pk for c in current if any(p.image_id == c.image_id and p.pk != c.pk for p in predictions)
    }
    if not replaced:
        return None
    newest = max((c for c in current if c.pk in replaced), key=lambda c: (c.queued_at, c.pk))
    previous = study_result([p for p in predictions if p.pk not in replaced])
    return ReanalysisNotice(
        version=newest.model_version.name if newest.model_version is not None else None,
        at=newest.queued_at,
        previous_status=previous.status,
        previous_label=previous.shown_label,
        previous_version=previous.model_version,
        pending=any(c.status in (QUEUED, RUNNING) for c in current if c.pk in replaced),
    )
