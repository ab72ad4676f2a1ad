"""Sweeps: a small YAML spec (a base config plus lists over any field) expanded into named runs
with deterministic IDs, trained on this machine (a process pool) or on Slurm (submitit array
jobs); finished runs are skipped, interrupted ones resumed.

* :mod:`~alignment.sweeps.spec`: the spec format, loading and validation;
* :mod:`~alignment.sweeps.expand`: runs and run IDs;
* :mod:`~alignment.sweeps.status`: done / running / failed / interrupted / pending;
* :mod:`~alignment.sweeps.worker`: train one run (skip, resume, lock, ``ERROR``);
* :mod:`~alignment.sweeps.local`, :mod:`~alignment.sweeps.slurm`: the executors;
* :mod:`~alignment.sweeps.resources`: the ``slurm:`` section.

Bundled specs (``alignment/sweeps/specs``): ``mnist``, ``cifar10``, ``sparse``, ``imagenet``.
"""

from alignment.sweeps.expand import Run, expand, identity
from alignment.sweeps.resources import SlurmResources, resources_from_dict
from alignment.sweeps.spec import SweepSpec, bundled_specs, load_spec
from alignment.sweeps.status import RunState, Status, run_states

__all__ = [
    "Run",
    "RunState",
    "SlurmResources",
    "Status",
    "SweepSpec",
    "bundled_specs",
    "expand",
    "identity",
    "load_spec",
    "resources_from_dict",
    "run_states",
]
