"""What the benchmarks, examples and tests share and the library does not need: offline
data loaders (:mod:`experiments.datasets`) and the small reference models of the papers
with a plain training loop (:mod:`experiments.models`).

Not installed with ``captum_cd``: scripts run from the repository import it with the
repository's root on ``sys.path`` (the first lines of the benchmarks and examples, and
``tests/conftest.py`` put it there). The tutorials, which must run from any folder, write
out the few loaders and models they need.
"""
