"""The Celery app. Workers: `celery -A cxrweb worker -Q inference` (and `-Q training`)."""

from __future__ import annotations

import functools
import logging
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxrweb.settings")

logger = logging.getLogger(__name__)


def _survive_a_lost_broker_with_tasks_in_flight() -> None:
    """Keep a worker alive when Redis goes away while it holds an unacknowledged task.

    With late acknowledgement that is any task in flight. Celery 5.7's consumer, on losing the
    broker, first collects the connection (its transport's ``client`` becomes None), then closes
    it and connects anew. Two things then reach Redis through the collected connection:
    closing its channel restores the unacknowledged messages, and the task in flight, when it
    ends, acknowledges its message on that channel. Both fail with AttributeError, which is not
    a connection error: "Unrecoverable error", and the whole worker exits (under `make run`,
    the whole app with it). Reproduced by tests/faults: Redis stopped under a running
    prediction.

    Here a channel whose connection was collected raises a connection error instead, which
    Celery and kombu handle as such: the restore is skipped and the late acknowledgement is
    logged as failed. Those messages stay in Redis's set of unacknowledged ones, which kombu
    puts back after the visibility timeout (a redelivered prediction finds itself done), and
    the database's reconciler covers what a restarted, empty Redis lost.
    """
    import redis
    from kombu.transport import redis as kombu_redis

    connparams = kombu_redis.Channel._connparams
    if getattr(connparams, "cxr_guarded", False):
        return

    @functools.wraps(connparams)
    def _connparams(self, *args, **kwargs):
        transport = self.connection
        if transport is None or transport.client is None:
            raise redis.exceptions.ConnectionError(
                "this broker connection was closed after the broker was lost"
            )
        return connparams(self, *args, **kwargs)

    _connparams.cxr_guarded = True
    kombu_redis.Channel._connparams = _connparams


def _free_the_slot_of_an_acknowledgement_that_failed() -> None:
    """Keep a worker taking tasks after Redis failed to answer a late acknowledgement.

    A task that ends while Redis hangs (paused, a half-open link) has its acknowledgement time
    out (CXR_BROKER_TIMEOUT_S). Celery logs "Couldn't ack" and goes on, but kombu 5.7's Redis
    QoS frees the message's prefetch slot only after Redis answered: the message stays counted
    as in flight in the worker for good. A worker with one pool process (prefetch 1) then never
    asks Redis for a message again, and since its own connection came back by itself, nothing
    ever restarts it: it stays up and idle until it is restarted (two pool processes: two such
    acknowledgements). Seen in tests/faults (test_a_hung_broker_does_not_hang_uploads, when a
    task ended just as Redis was paused: uploads stayed queued for good); tested in
    tests/cxrweb/test_celery.py.

    Here the slot is freed whether Redis answered or not, and the error still goes to Celery,
    which logs it. The message stays in Redis's set of unacknowledged ones, which kombu puts
    back after the visibility timeout: the task runs again and finds its work done.
    """
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    qos = kombu_redis.QoS
    if getattr(qos.ack, "cxr_guarded", False):
        return

    def _freeing_the_slot(method):
        @functools.wraps(method)
        def guarded(self, delivery_tag, *args, **kwargs):
            try:
                return method(self, delivery_tag, *args, **kwargs)
            except Exception:
                virtual.QoS.ack(self, delivery_tag)  # this worker's own bookkeeping only
                raise

        guarded.cxr_guarded = True
        return guarded

    qos.ack = _freeing_the_slot(qos.ack)
    qos.reject = _freeing_the_slot(qos.reject)


_survive_a_lost_broker_with_tasks_in_flight()
_free_the_slot_of_an_acknowledgement_that_failed()

app = Celery("cxrweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _recycle_database_connections(**kwargs) -> None:
    """Database connections in tasks as Django treats them in requests.

    Celery's Django fix-up closes every connection before and after each task, so a worker would
    open a new PostgreSQL connection per task (a few ms of CPU each, on both sides). With
    CELERY_DB_REUSE_MAX set it keeps them; this closes the ones that are unusable (an error
    happened: e.g. the database restarted) or older than CONN_MAX_AGE, and re-arms
    CONN_HEALTH_CHECKS, exactly what Django does at the start and end of a request.
    """
    from django.db import close_old_connections

    close_old_connections()
