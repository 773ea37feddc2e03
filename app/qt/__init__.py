"""The Qt (PyQt6 + pyqtgraph) views.

Importing this package first (the viewer's entry points do) makes the OpenMP threads of PyTorch
wait passively (``OMP_WAIT_POLICY=PASSIVE``, unless the environment sets it): the default
busy-waiting threads keep the cores spinning between two parallel steps of the analysis or a
model, which takes CPU from the GUI thread, and on a machine shared with other jobs made the
analysis several times slower (``python main.py bench --only viewer --quick``, cold analysis of 4
methods on a 512x512x31 scene, 2 cores at load average 4-7: 16.6 s busy-waiting, 3.7 s passive;
docs/benchmarks.md). It has no effect once torch has been imported.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
