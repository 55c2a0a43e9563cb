"""The on-disk store: data home layout, releases, the LATEST pointer, the catalogue, the writer lock."""
