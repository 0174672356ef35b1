"""How the inference workers run (batching, the frozen graph, priority, memory, warm models,
retries): read from the environment and checked as they are read; cxrweb/settings.py imports
them. Figures behind the defaults: bench/RESULTS.md."""

from __future__ import annotations

from cxrweb.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_non_negative_int,
    env_positive_int,
)

# Micro-batching: a worker analyses up to this many queued predictions of the same model in one
# forward/backward pass (only what is already waiting: a lone upload is never held back).
# 0 = by device: 8 on a CPU, 16 on a GPU; 1 turns batching off. The model's work per image is
# lower in batches; a batch's first result waits for the whole batch, but only under load, where
# a batch's throughput shortens the queue wait. Why 8 and not 16 on a CPU: bench/RESULTS.md.
CXR_INFERENCE_BATCH_SIZE = env_non_negative_int("CXR_INFERENCE_BATCH_SIZE", 0)
# On a CPU, a worker runs the model's layers below the Grad-CAM layer as one frozen TorchScript
# graph (oneDNN, pre-packed weights), kept where it gives the same outputs and does not time
# slower than eager, the two timed in turns at load (the trace and the check make a load longer;
# figures in bench/RESULTS.md). false: everything eager.
CXR_INFERENCE_FREEZE = env_bool("CXR_INFERENCE_FREEZE", True)
# Workers lower their CPU priority by this much (nice) at start, so that on a host shared with
# the web server an upload is never queued behind model work; a host that runs only workers
# is unaffected. 0 keeps the priority.
CXR_WORKER_NICE = env_int("CXR_WORKER_NICE", 10, minimum=0, maximum=19)
# Freed memory a worker process keeps for its next prediction instead of handing it back to the
# system (glibc's malloc trim threshold; blocks under 64 MB then come from the heap, not from a
# fresh mapping each time). With glibc's defaults every prediction returns its working memory
# and faults it in again (a measurable share of its CPU: bench/RESULTS.md); the cost is up to this
# much resident memory per pool process. 0 keeps glibc's defaults; no effect on other C libraries.
CXR_WORKER_HEAP_RETAIN_MB = env_non_negative_int("CXR_WORKER_HEAP_RETAIN_MB", 256)
# The worker's main process imports torch & co. before forking its pool, so the pool processes
# share those libraries' memory and restart faster. false: each pool process imports its own.
CXR_WORKER_PRELOAD_ML = env_bool("CXR_WORKER_PRELOAD_ML", True)
# Each pool process of an inference worker loads the production model as soon as it is up,
# rather than on its first prediction, which would wait for the load. false: on first use.
CXR_WORKER_WARM_MODEL = env_bool("CXR_WORKER_WARM_MODEL", True)
# How often (seconds) that thread looks for a newly promoted version to load ahead; 0: never.
CXR_WORKER_WARM_POLL_S = env_non_negative_int("CXR_WORKER_WARM_POLL_S", 10)
# A crashed prediction goes back to the queue after this delay (behind what is waiting).
CXR_RETRY_DELAY_S = env_float("CXR_RETRY_DELAY_S", 5.0, minimum=0)

# One model server per GPU (diagnosis.worker.model_servers): on a GPU host the inference worker's
# pool processes decode images and render heatmaps on the CPU and send the decoded images to one
# process per GPU, which batches them and runs the model, instead of each pool process holding a
# CUDA context of its own (~1 GB of memory each). auto: on where the worker's host has a CUDA
# GPU; on: also on a CPU (one server for the host); off: every pool process runs the model.
CXR_MODEL_SERVER = env_choice("CXR_MODEL_SERVER", "auto", ("auto", "on", "off"))
# The most images a model server runs in one pass (across the pool processes' requests).
CXR_MODEL_SERVER_BATCH = env_positive_int("CXR_MODEL_SERVER_BATCH", 64)
# How long a server waits after a request for others to join its batch (milliseconds).
CXR_MODEL_SERVER_WAIT_MS = env_float("CXR_MODEL_SERVER_WAIT_MS", 2.0, minimum=0, maximum=1000)
# torch's CPU threads in each server; 0: the host's cores shared among the servers, at most 4 on
# a GPU (the GPU does the model's work) and all of them on a CPU.
CXR_MODEL_SERVER_THREADS = env_non_negative_int("CXR_MODEL_SERVER_THREADS", 0)
