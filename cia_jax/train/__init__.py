"""cia_jax.train: the training program.

`trainer.train_and_evaluate(config, workdir)` runs in phases over `inputs` (datasets, samplers, batches), `init`
(the initial state), `step` (the jitted train / eval steps, device placement), `state` (TrainState, optimiser,
EMA), `logging` (TensorBoard, metrics.jsonl, console) and `checkpoint`.
"""
