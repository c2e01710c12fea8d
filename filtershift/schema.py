"""The columns of a database's two tables (docs/design.md §3): names and dtypes, pure constants.

``models.parquet`` has one row per checkpoint, ``layers.parquet`` one row per stored 3x3 layer.
The store (:mod:`filtershift.store`) writes and reads them; pure code that builds tables (the
CNN-Filter-DB mapping, extraction) imports the names from here without touching storage.
"""

MODEL_COLUMNS = [
    "model_id", "name", "path", "format", "sha256", "task", "data_type", "dataset", "family",
    "n_layers", "n_filters", "status", "error",
]
LAYER_COLUMNS = [
    "layer_id", "model_id", "name", "conv_index", "n_conv", "depth", "depth_decile",
    "in_channels", "out_channels", "groups", "start", "stop", "n_filters",
]
MODEL_DTYPES = {
    "model_id": "int32", "n_layers": "int64", "n_filters": "int64", "n_conv": "int64",
    "size_bytes": "int64", "mtime_ns": "int64",
}
LAYER_DTYPES = {
    "layer_id": "int32", "model_id": "int32", "conv_index": "int32", "n_conv": "int32",
    "depth": "float64", "depth_decile": "int8", "in_channels": "int32", "out_channels": "int32",
    "groups": "int32", "start": "int64", "stop": "int64", "n_filters": "int64",
}
