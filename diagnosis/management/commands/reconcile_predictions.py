from __future__ import annotations

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Re-send predictions whose task was lost and fail those that cannot finish; make and "
        "re-send lost PACS exports and webhook deliveries (what the periodic reconciler does; "
        "for cron or an operator after an outage)."
    )

    def handle(self, *args, **options):
        # The periodic task's own body, run here: one list of what reconciling covers.
        from diagnosis.tasks import reconcile_predictions

        counts = reconcile_predictions()
        self.stdout.write(
            f"re-sent {counts['redispatched']}, failed {counts['failed']}; PACS exports made "
            f"{counts['pacs_made']}, re-sent {counts['pacs_resent']}; webhooks re-sent "
            f"{counts['webhooks_resent']}"
        )
