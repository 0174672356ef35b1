"""cxrweb.celery's guards around kombu's Redis transport, against a real Redis."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis
from kombu import Connection, Exchange, Queue

import cxrweb.celery  # noqa: F401 - installs the guards
from tests.conftest import TEST_BROKER_URL

pytestmark = pytest.mark.integration


class _HungPipeline:
    """What the acknowledgement's pipeline does when Redis stops answering."""

    def execute(self):
        raise redis.exceptions.TimeoutError("Timeout reading from socket")


@pytest.fixture
def channel():
    queue = Queue(f"test-ack-{uuid.uuid4().hex}", Exchange(f"test-ack-{uuid.uuid4().hex}"))
    with Connection(TEST_BROKER_URL) as conn:
        channel = conn.channel()
        bound = queue(channel)
        bound.declare()
        channel.basic_qos(0, 1, False)  # prefetch 1: a worker with one pool process
        yield channel, bound
        bound.delete()
        channel.close()


def _receive(channel, queue):
    queue.maybe_bind(channel)
    channel.basic_publish(channel.prepare_message("{}"), queue.exchange.name, queue.routing_key)
    message = queue.get(no_ack=False)
    assert message is not None
    assert not channel.qos.can_consume()  # its slot is taken until it is acknowledged
    return message


def test_an_acknowledgement_redis_did_not_answer_frees_the_prefetch_slot(channel, monkeypatch):
    """A task ending while Redis hangs: its late acknowledgement times out. Before the guard,
    kombu kept the message counted as in flight, and a worker with prefetch 1 never asked
    Redis for another message (tests/faults: a hung broker left uploads queued for good)."""
    channel, queue = channel
    message = _receive(channel, queue)
    monkeypatch.setattr(channel.qos, "_remove_from_indices", lambda tag, pipe=None: _HungPipeline())

    message.ack_log_error(logging.getLogger(__name__), channel.connection_errors)

    assert channel.qos.can_consume()
    # Redis still holds it as unacknowledged: it is delivered again after the visibility timeout.
    assert channel.client.hexists(channel.unacked_key, message.delivery_tag)


def test_a_rejection_redis_did_not_answer_frees_the_prefetch_slot(channel, monkeypatch):
    channel, queue = channel
    message = _receive(channel, queue)
    monkeypatch.setattr(channel.qos, "_remove_from_indices", lambda tag, pipe=None: _HungPipeline())

    with pytest.raises(redis.exceptions.TimeoutError):
        message.reject()

    assert channel.qos.can_consume()


def test_an_acknowledgement_redis_answered_frees_the_slot_once(channel):
    channel, queue = channel
    message = _receive(channel, queue)

    message.ack()

    assert message.acknowledged and channel.qos.can_consume()
    assert not channel.client.hexists(channel.unacked_key, message.delivery_tag)
