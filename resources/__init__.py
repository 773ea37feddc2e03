"""The files the application ships: the bundled sample scene (``sample/``), the SRF and CIE tables
(``srf/``), the dataset split files (``splits/``) and the model weights with their cards (``weights/``).

Installed, this folder is the package ``hsi_sr_resources`` (a name no user's own ``resources``
folder shadows); ``app.core.paths`` and ``models.spec`` find it with ``importlib.resources``, and
in a source checkout they read the folder itself. Nothing here is meant to be imported for code.
"""
