"""Asynchronous, open-loop load: uploads offered at a fixed rate for a fixed time, completion read
from the server's own timestamps through one bulk status query per poll.

The thread-per-client load of bench/load.py cannot offer more than a few hundred uploads/s, and
its head-of-line polling cannot see completions faster than that: fine on 2 cores, the limit on
a GPU host (issue #24). Here one asyncio loop with httpx offers uploads at ``--rate`` per second
whatever the server does (open loop: a slow server is not given fewer uploads, up to
``--max-in-flight`` outstanding requests), for ``--seconds`` (phases sized by time, not count),
then polls ``GET /api/v1/predictions/status/?ids=...`` (1,000 ids a query) until every
prediction is done or failed.

Figures (``run`` returns them; the CLI prints JSON):

- ``uploads``: offered, sent, accepted, refused (non-201), errors, shed (offered while
  ``--max-in-flight`` requests were outstanding: the client's own limit, not the server's),
  the achieved rate, and upload latency percentiles;
- ``completion``: done, failed, not finished by ``--timeout``; ``throughput_per_s`` (server
  side: finished predictions over the span from the first one queued to the last one finished,
  from the server's timestamps) beside ``client_throughput_per_s`` (finished over the span from
  the first upload sent to the poll that saw the last one finish: bounded by ``--poll-s``);
  end-to-end, queue wait and compute percentiles from the server's timestamps;
- ``polls``: status queries made.

Usage, against a running app (e.g. ``make run``) and a token from ``manage.py create_token``::

    python -m bench.async_load --url http://127.0.0.1:8000 --token KEY --images DIR \\
        --rate 200 --seconds 10 [--max-in-flight 256] [--out report.json]

bench/run.py runs it as its last load phase with ``--async-rate`` and ``--async-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import time
from dataclasses import dataclass
from pathlib import Path

from bench.client import parse_time
from bench.load import ImageSource, find_images
from bench.stats import summary

STATUS_CHUNK = 1000  # ids per status query: the API's limit


@dataclass
class _Upload:
    sent_at: float  # perf_counter
    elapsed_ms: float = 0.0
    status: int = 0
    prediction_id: int | None = None
    error: str = ""


async def _upload(client, source: ImageSource, tag: str, record: _Upload) -> None:
    path, data, serial = source.next()
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        resp = await client.post(
            "/api/v1/studies/",
            data={"patient_id": f"ASYNC-{tag}-{serial:07d}", "view": "PA"},
            files={"image": (path.name, data, ctype)},
        )
        record.status = resp.status_code
        if resp.status_code == 201:
            record.prediction_id = int(resp.json()["prediction_id"])
        else:
            record.error = f"{resp.status_code}: {resp.text[:200]}"
    except Exception as exc:  # noqa: BLE001 - any client-side failure is a figure, not a crash
        record.error = f"{type(exc).__name__}: {exc}"
    record.elapsed_ms = (time.perf_counter() - record.sent_at) * 1000.0


async def offer(
    client, source: ImageSource, *, rate: float, seconds: float, max_in_flight: int, tag: str
) -> tuple[list[_Upload], int, float]:
    """Offer uploads at ``rate``/s for ``seconds``; the uploads, how many were shed, and the
    perf_counter time of the first send."""
    uploads: list[_Upload] = []
    tasks: set[asyncio.Task] = set()
    shed = 0
    start = time.perf_counter()
    i = 0
    while True:
        due = start + i / rate
        if due - start >= seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        i += 1
        if len(tasks) >= max_in_flight:
            shed += 1
            continue
        record = _Upload(sent_at=time.perf_counter())
        uploads.append(record)
        task = asyncio.create_task(_upload(client, source, tag, record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return uploads, shed, start


async def track(
    client, ids: list[int], *, poll_s: float, timeout_s: float
) -> tuple[dict[int, dict], int, float | None]:
    """Poll the bulk status until every id is done or failed (or ``timeout_s``); the last state
    of each, the number of queries, and when (perf_counter) the last one was seen finished."""
    states: dict[int, dict] = {}
    pending = set(ids)
    polls = 0
    seen_all: float | None = None
    deadline = time.perf_counter() + timeout_s
    while pending and time.perf_counter() < deadline:
        chunks = [
            sorted(pending)[i : i + STATUS_CHUNK] for i in range(0, len(pending), STATUS_CHUNK)
        ]
        for chunk in chunks:
            resp = await client.get(
                "/api/v1/predictions/status/", params={"ids": ",".join(map(str, chunk))}
            )
            polls += 1
            resp.raise_for_status()
            for row in resp.json()["predictions"]:
                states[row["id"]] = row
                if row["status"] in ("done", "failed"):
                    pending.discard(row["id"])
        if not pending:
            seen_all = time.perf_counter()
            break
        await asyncio.sleep(poll_s)
    return states, polls, seen_all


def _completion(states: dict[int, dict], ids: list[int], first_sent: float, seen_all) -> dict:
    finished = [s for s in states.values() if s["status"] in ("done", "failed")]
    done = [s for s in finished if s["status"] == "done"]
    queued = [parse_time(s["queued_at"]) for s in finished]
    ends = [parse_time(s["finished_at"]) for s in finished]
    span = (max(e for e in ends if e) - min(q for q in queued if q)) if finished else 0.0
    e2e = [
        (parse_time(s["finished_at"]) - parse_time(s["queued_at"])) * 1000.0
        for s in done
        if s["finished_at"]
    ]
    wait = [
        (parse_time(s["started_at"]) - parse_time(s["queued_at"])) * 1000.0
        for s in done
        if s["started_at"]
    ]
    return {
        "done": len(done),
        "failed": len(finished) - len(done),
        "not_finished": len(ids) - len(finished),
        "throughput_per_s": round(len(done) / span, 2) if span > 0 else None,
        "server_span_s": round(span, 3),
        "client_throughput_per_s": (
            round(len(done) / (seen_all - first_sent), 2) if seen_all and done else None
        ),
        "end_to_end_ms": summary(e2e),
        "queue_wait_ms": summary(wait),
        "compute_ms": summary([s["compute_ms"] for s in done if s["compute_ms"] is not None]),
    }


async def run(
    url: str,
    token: str,
    source: ImageSource,
    *,
    rate: float,
    seconds: float,
    max_in_flight: int = 256,
    poll_s: float = 0.25,
    timeout_s: float = 300.0,
    tag: str = "a",
) -> dict:
    """One open-loop phase against the app at ``url``; the figures (see the module docstring)."""
    import httpx  # a dev dependency: the app itself never needs it

    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=httpx.Timeout(60.0)
    ) as client:
        uploads, shed, first_sent = await offer(
            client, source, rate=rate, seconds=seconds, max_in_flight=max_in_flight, tag=tag
        )
        last_answer = max((u.sent_at + u.elapsed_ms / 1000.0 for u in uploads), default=first_sent)
        ids = [u.prediction_id for u in uploads if u.prediction_id is not None]
        states, polls, seen_all = await track(client, ids, poll_s=poll_s, timeout_s=timeout_s)
    accepted = len(ids)
    return {
        "offered_rate_per_s": rate,
        "seconds": seconds,
        "max_in_flight": max_in_flight,
        "uploads": {
            "offered": len(uploads) + shed,
            "sent": len(uploads),
            "accepted": accepted,
            "refused": sum(1 for u in uploads if u.status and u.status != 201),
            "errors": sum(1 for u in uploads if not u.status),
            "shed_by_client": shed,
            "accepted_per_s": round(accepted / (last_answer - first_sent), 2)
            if accepted and last_answer > first_sent
            else None,
            "upload_ms": summary([u.elapsed_ms for u in uploads if u.status == 201]),
            "first_errors": [u.error for u in uploads if u.error][:5],
        },
        "completion": _completion(states, ids, first_sent, seen_all),
        "polls": polls,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the app, e.g. http://127.0.0.1:8000")
    parser.add_argument("--token", required=True, help="an API token (manage.py create_token)")
    parser.add_argument("--images", type=Path, required=True, help="folder of *.jpg/*.png/*.dcm")
    parser.add_argument("--rate", type=float, default=100.0, help="uploads offered per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long uploads are offered")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--poll-s", type=float, default=0.25)
    parser.add_argument("--timeout", type=float, default=300.0, help="for completion, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.max_in_flight < 1:
        parser.error("--rate and --seconds must be positive, --max-in-flight at least 1")
    source = ImageSource(find_images(args.images, args.seed))
    report = asyncio.run(
        run(
            args.url,
            args.token,
            source,
            rate=args.rate,
            seconds=args.seconds,
            max_in_flight=args.max_in_flight,
            poll_s=args.poll_s,
            timeout_s=args.timeout,
        )
    )
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if report["uploads"]["accepted"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
