"""The worker's roles, one module each; ``streams.app`` wires them as Faust agents by ``worker_role``.

- ``services``: the encoder, index and handlers, built on first use inside the worker.
- ``shell``: what every role's bodies share (:class:`~streams.roles.shell.Worker`: settings, services,
  output topics; dead letters, retried blocking work) and the commit-safety waits.
- ``encoder``: content, live segments, the live refresh timer.
- ``ranking``: live status, interactions, the trainer's model updates.

The trainer role is no Faust app: a confluent-kafka loop, ``streams.trainer.run_trainer`` (``livelens trainer``).

Each agent body is a plain coroutine over one event or micro-batch and explicit dependencies, so a
unit test drives it with fake tables and topics, without a broker (tests/unit/test_roles.py).
"""
