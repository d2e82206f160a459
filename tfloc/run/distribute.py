"""Training on several devices or machines with tf.distribute (``runtime.distribution``).

- ``none``: the default strategy (one device).
- ``mirrored``: :class:`tf.distribute.MirroredStrategy` over this machine's GPUs (the
  CPU when there are none).
- ``multi_worker``: :class:`tf.distribute.MultiWorkerMirroredStrategy` across the
  processes that ``TF_CONFIG`` lists (one per machine, or several on one machine with
  distinct ports). Every worker runs the same command; each one loads the data, the
  global batch (``data.batch_size``) is split between the replicas by Keras (tf.data
  auto-sharding, policy DATA: each worker keeps its share of every batch), and gradients
  are summed across replicas of a loss already divided by their number, so a step
  equals a single-process step on the same global batch (up to batch-norm statistics,
  which are per replica). The chief (``task.type: chief``, else worker 0) alone writes
  the run directory: config, checkpoints, TensorBoard, report and export; the other
  workers write theirs to a temporary directory that is removed at the end.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tfloc.config import ConfigError


@dataclass
class Worker:
    """Where this process stands in the cluster."""
    is_chief: bool = True
    index: int = 0
    num_workers: int = 1
    task_type: str = "chief"


def parse_tf_config(text: str | None) -> Worker:
    """This process's role from ``TF_CONFIG`` (ConfigError naming what is wrong)."""
    where = "TF_CONFIG"
    if not text:
        raise ConfigError("runtime.distribution: multi_worker needs the TF_CONFIG environment "
                          "variable (cluster and task: see README, 'Training on several machines')")
    try:
        conf = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(conf, dict) or not isinstance(conf.get("cluster"), dict) \
            or not isinstance(conf.get("task"), dict):
        raise ConfigError(f"{where}: must be a JSON object with 'cluster' and 'task' objects")
    cluster, task = conf["cluster"], conf["task"]
    for role, hosts in cluster.items():
        if role not in ("chief", "worker", "evaluator", "ps"):
            raise ConfigError(f"{where}: unknown role '{role}' in cluster (chief, worker)")
        if not isinstance(hosts, list) or not hosts or \
                not all(isinstance(h, str) and _host_port(h) for h in hosts):
            raise ConfigError(f"{where}: cluster.{role} must be a non-empty list of 'host:port' "
                              f"strings, got {hosts!r}")
    if "ps" in cluster or "evaluator" in cluster:
        raise ConfigError(f"{where}: multi_worker trains with chief and worker tasks only")
    if "worker" not in cluster and "chief" not in cluster:
        raise ConfigError(f"{where}: cluster lists no worker")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        raise ConfigError(f"{where}: task.type {kind!r} is not a role of the cluster "
                          f"({', '.join(cluster)})")
    if not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ConfigError(f"{where}: task.index {index!r} out of range for the "
                          f"{len(cluster[kind])} {kind} task(s)")
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    n = sum(len(cluster.get(r, [])) for r in ("chief", "worker"))
    order = (0 if kind == "chief" else index + len(cluster.get("chief", [])))
    return Worker(is_chief=chief, index=order, num_workers=n, task_type=kind)


def _host_port(h: str) -> bool:
    host, _, port = h.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def check_distribution(runtime) -> Worker:
    """The checks that need no TF (before any tracing): TF_CONFIG for multi_worker."""
    if runtime.distribution == "multi_worker":
        return parse_tf_config(os.environ.get("TF_CONFIG"))
    return Worker()


def make_strategy(runtime):
    """(strategy, worker) for ``runtime.distribution``; call before any other TF op (the
    collective ops of multi_worker are configured at program start)."""
    import tensorflow as tf
    worker = check_distribution(runtime)
    if runtime.distribution == "none":
        return tf.distribute.get_strategy(), worker
    if runtime.distribution == "mirrored":
        return tf.distribute.MirroredStrategy(), worker
    return tf.distribute.MultiWorkerMirroredStrategy(), worker
