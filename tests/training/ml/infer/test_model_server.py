"""The model server (one process per GPU for a worker's pool processes), as a real process on the
CPU: the same results as the predictor in-process, batches across its clients, a request at fault
fails alone, refuses strangers, and stops when its parent is gone."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from tests import imagegen
from tests.conftest import process_running, wait_for
from tests.training.ml.infer.test_predictor_ood import _reference
from tests.training.ml.samples import CLASSES, PREP
from training.ml.infer.predictor import Predictor
from training.ml.infer.remote import (
    ModelServerClient,
    ModelServerError,
    ModelServerUnavailable,
    RemotePredictor,
)
from training.ml.infer.server import AUTHKEY_ENV, ModelSpec
from training.ml.preprocessing import batch_gray_input

REPO = Path(__file__).resolve().parents[4]


def _start(tmp: Path, key: str, *extra: str, parent: int | None = None) -> subprocess.Popen:
    sock = tmp / "server.sock"
    argv = [sys.executable, "-m", "training.ml.infer.server", "--socket", str(sock)]
    argv += ["--device", "cpu", "--threads", "1", *extra]
    if parent is not None:
        argv += ["--parent", str(parent)]
    proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, AUTHKEY_ENV: key})
    wait_for(lambda: sock.exists() or proc.poll() is not None, timeout=120, what="the server")
    assert proc.poll() is None, "the model server exited at start"
    return proc


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict]:
    """A server (batches of up to 6, waiting up to 5 s for them to fill) and a model's files."""
    tmp = tmp_path_factory.mktemp("model-server")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=len(CLASSES))
    torch.save(model.state_dict(), tmp / "weights.pt")
    _reference(model, "mobilenet_v2").save(tmp / "reference.npz")
    key = secrets.token_hex(32)
    proc = _start(tmp, key, "--max-batch", "6", "--wait-ms", "5000", parent=os.getpid())
    spec = ModelSpec(
        key="1:abc:0",
        path=str(tmp / "weights.pt"),
        arch="mobilenet_v2",
        classes=tuple(CLASSES),
        preprocessing=PREP.to_dict(),
        temperature=1.5,
        ood_reference=str(tmp / "reference.npz"),
    )
    yield {"address": str(tmp / "server.sock"), "key": bytes.fromhex(key), "spec": spec}
    proc.terminate()
    assert proc.wait(timeout=30) == 0


def _images(seed: int, n: int = 3):
    return [imagegen.make_xray(90 + 7 * i, 80, seed=seed + i) for i in range(n)]


def _client(served: dict) -> ModelServerClient:
    return ModelServerClient(served["address"], served["key"], connect_timeout=5)


def test_results_are_the_in_process_predictors(served):
    spec = served["spec"]
    remote = RemotePredictor(_client(served), spec).load()
    local = spec.load("cpu")
    images = _images(10)
    cams = [None, "covid", "normal"]

    got = remote.predict(images, cam_classes=cams)
    expected = local.predict(images, cam_classes=cams)

    assert remote.device == "cpu" and "model server" in remote.execution
    for g, e in zip(got, expected, strict=True):
        assert g.label == e.label and g.cam_class == e.cam_class
        np.testing.assert_allclose(list(g.probabilities.values()), list(e.probabilities.values()))
        np.testing.assert_allclose(g.cam, e.cam, atol=1e-5)
        assert g.ood.score == pytest.approx(e.ood.score, rel=1e-4)
        assert (g.ood.threshold, g.ood.flagged) == (e.ood.threshold, e.ood.flagged)
    assert got[1].cam_class == "covid"


def test_requests_from_several_processes_run_in_one_batch(served):
    spec = served["spec"]
    before = _client(served).call({"op": "stats"})
    a, b = (Client(served["address"], family="AF_UNIX", authkey=served["key"]) for _ in "ab")
    grays = [batch_gray_input(_images(seed), PREP).numpy() for seed in (20, 30)]
    for conn, gray in zip((a, b), grays, strict=True):
        conn.send({"op": "predict", "spec": spec, "gray": gray, "cam_classes": None})
    replies = [a.recv(), b.recv()]

    after = _client(served).call({"op": "stats"})
    assert after["batches"] - before["batches"] == 1, (before, after)
    assert after["largest_batch"] == 6 and after["requests"] - before["requests"] == 2
    assert [len(r["raw"].labels) for r in replies] == [3, 3]
    alone = Predictor.from_file(
        spec.path,
        arch=spec.arch,
        classes=list(CLASSES),
        preprocessing=PREP,
        device="cpu",
        temperature=1.5,
    ).predict_gray(torch.from_numpy(grays[1]))
    np.testing.assert_allclose(replies[1]["raw"].probabilities, alone.probabilities, atol=1e-6)


def test_a_request_at_fault_fails_alone(served):
    spec = served["spec"]
    good, bad = (Client(served["address"], family="AF_UNIX", authkey=served["key"]) for _ in "gb")
    gray = batch_gray_input(_images(40), PREP).numpy()
    bad.send({"op": "predict", "spec": spec, "gray": gray[:, :, :10], "cam_classes": None})
    good.send({"op": "predict", "spec": spec, "gray": gray, "cam_classes": None})
    refused, answered = bad.recv(), good.recv()
    assert refused["kind"] == "forward" and "Nx1x64x64" in refused["error"]
    assert len(answered["raw"].labels) == 3


def test_a_model_it_cannot_load_is_the_callers_error(served):
    wrong = ModelSpec(
        key="2:abc:0",
        path=served["spec"].path,
        arch="mobilenet_v2",
        classes=("a", "b"),  # the weights have three outputs
        preprocessing=PREP.to_dict(),
    )
    with pytest.raises(ModelServerError, match="3 outputs but 2 classes"):
        RemotePredictor(_client(served), wrong).load()


def test_a_process_without_the_key_is_refused(served):
    with pytest.raises(AuthenticationError):
        Client(served["address"], family="AF_UNIX", authkey=secrets.token_bytes(32))
    assert _client(served).call({"op": "stats"})["device"] == "cpu"  # still serving


def test_no_server_is_unavailable_not_a_failure_of_the_images(tmp_path):
    client = ModelServerClient(str(tmp_path / "none.sock"), b"k" * 32, connect_timeout=0.5)
    with pytest.raises(ModelServerUnavailable, match="No model server answers"):
        client.call({"op": "stats"})


def test_the_server_stops_when_its_parent_is_gone(tmp_path):
    """As when a worker's main process is killed: the server's parent (here a small Python
    process that started it, as the worker does) dies, and the server exits by itself."""
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "argv = [sys.executable, '-m', 'training.ml.infer.server', '--socket', sys.argv[1],\n"
            "        '--device', 'cpu', '--parent', str(os.getpid())]\n"
            "print(subprocess.Popen(argv).pid, flush=True)\n"
            "time.sleep(600)\n",
            str(tmp_path / "s.sock"),
        ],
        cwd=REPO,
        env={**os.environ, AUTHKEY_ENV: secrets.token_hex(32)},
        stdout=subprocess.PIPE,
        text=True,
    )
    server = int(starter.stdout.readline())
    wait_for(lambda: (tmp_path / "s.sock").exists(), timeout=120, what="the server")
    starter.kill()
    starter.wait()
    wait_for(lambda: not process_running(server), timeout=30, what="the orphaned server to exit")
