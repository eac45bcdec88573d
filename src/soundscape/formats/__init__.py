"""The file formats people's tools read and write, parsers and writers side by side.

- :mod:`~soundscape.formats.tables`: the entry points: :func:`~.tables.import_file`,
  :func:`~.tables.export` (annotations) and :func:`~.tables.detect_format`;
- :mod:`~soundscape.formats.raven`: Raven Pro selection tables, one column set for annotation
  exports, search results (``search --raven``) and review batches;
- :mod:`~soundscape.formats.audacity`: Audacity label tracks;
- :mod:`~soundscape.formats.csv`: the annotation CSV;
- :mod:`~soundscape.formats.rows`: what they share (finding recordings, numbers, cells).

The records themselves (checks, storing, listing) are :mod:`soundscape.annotations`.
"""
