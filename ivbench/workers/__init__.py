"""Workers: where systems run and metrics score (docs/architecture.md, "Workers").

One protocol (`protocol`), three ways to run its worker side (`host.WorkerHost`): in the
driver's own process (`--in-process`), in a worker process on this machine (the default;
`process`), or in such a process under a Ray actor (`--workers N`, `--ray-address`;
`ray_backend`). `pool` spreads whole dialogues over workers; the driver stays the only writer
of the run directory. Not to be confused with `ivbench.runner.workers`, the threads inside one
worker that bound each call into a system by the turn timeout.
"""
