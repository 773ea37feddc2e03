"""`compare`: the metrics of existing predictions (files or folders) against ground-truth cubes.

>>> doc = compare("cave_test/", ["out/bicubic/", "out/mine/"], scale=4)
>>> print(format_table(doc))

- Each side is a cube file, a CAVE scene folder (PNG bands), or a folder holding cube files
  and/or scene folders (CAVE's nested ``beads_ms/beads_ms/*.png`` included). Predictions are
  matched to GT items by name: the file stem, case-insensitive, then with common suffixes removed
  (``_pred``, ``_sr``, ``_out``, ``_result``, ``_recon``, ``_x4``, the method's own name, ...), then
  without CAVE's ``_ms``. Unmatched items on either side are listed, never dropped silently.
- Every file goes through the project's readers (``app.core.io.open_cube``). The band axis of a
  prediction is found against the GT's shape; the value range (float in [0, 1], 0-255, 0-65535) is
  detected from the values (and, between 0-255 and 0-65535, from the GT's mean) and stated per row.
- A prediction smaller than the GT (a border, or the GT cropped to a multiple of the scale) is
  compared on the matching part of the GT only when ``crop=True``, and the row says so.
- Metrics come from ``app.core.science.metrics.compute_all`` (protocols.md conventions); ERGAS needs the
  scale. A file that cannot be read or compared becomes an entry of ``errors`` (one line naming the
  file and the problem); the rest of the dataset is still computed.

The document has the schema of ``eval``: ``results`` (one row per image and method with
``psnr``, ``ssim``, ``sam_deg``, ``ergas``, ``rmse``) and ``summary`` (the mean per method), plus
``errors``, ``unmatched``, ``ignored`` and ``notes``.
"""
from app.core.evaluation.compare.discovery import (CUBE_EXTENSIONS, ENVI_DATA_EXTENSIONS, MATCH_SUFFIXES, Item, Side,
                                                   list_items, match_items)
from app.core.evaluation.compare.reading import RANGES, Loaded, fit_size, read_cube
from app.core.evaluation.compare.run import CompareCancelled, compare, exit_status
from app.core.evaluation.compare.tables import (METRIC_KEYS, format_table, to_csv, to_markdown, write_csv,
                                                write_markdown)

__all__ = ["compare", "list_items", "match_items", "format_table", "to_csv", "to_markdown", "write_csv",
           "write_markdown", "exit_status", "RANGES", "METRIC_KEYS", "Item", "CompareCancelled", "Side", "Loaded",
           "read_cube", "fit_size", "CUBE_EXTENSIONS", "ENVI_DATA_EXTENSIONS", "MATCH_SUFFIXES"]
