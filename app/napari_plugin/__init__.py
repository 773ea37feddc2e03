"""napari reader plugin: every cube format this tool reads opens in napari as an image layer.

The npe2 manifest (``napari.yaml``, beside this file) is registered under the ``napari.manifest``
entry point of the distribution ``hsi-sr-viewer``; the reader itself is :mod:`app.napari_plugin.reader`.
Nothing here imports napari or Qt: the reader returns napari's layer-data tuples.
"""
