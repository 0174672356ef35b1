"""The worker side of diagnosis: what a Celery worker process does with a task's ids.

- run: one prediction task's work (claim, micro-batch, compute, finish);
- claim: taking a prediction, and its batch companions, with conditional UPDATEs;
- compute: the model cache of this process and the micro-batch's forward pass;
- finish: storing outcomes, retrying or failing, releasing what was not stored;
- heatmaps: per-class heatmaps on demand;
- faults: the fault-injection hook of the fault tests;
- errors: PredictionFailure, a permanent failure;
- process: the worker process's own setup (Celery signal handlers);
- model_servers: on a GPU host, the model servers the worker starts and the pool processes use.

Imported only by workers (diagnosis.tasks) and tests: compute imports torch.
"""
