from __future__ import annotations

from django.core.management.base import BaseCommand

from diagnosis.dispatch import predictions_reconcile


class Command(BaseCommand):
    help = (
        "Re-send predictions whose task was lost and fail those that cannot finish "
        "(what the periodic reconciler does; for cron or an operator after an outage)."
    )

    def handle(self, *args, **options):
        counts = predictions_reconcile()
        self.stdout.write(f"re-sent {counts['redispatched']}, failed {counts['failed']}")
