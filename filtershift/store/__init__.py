"""The filter database on disk: the one package that touches its storage (see docs/design.md §3).

``database`` opens, creates and appends to a database (the Zarr store and the two Parquet tables);
``arrays`` sizes, writes and reads row ranges of ``filters.zarr`` and holds the row checksum and
the row-to-layer mapping; ``files`` makes every write atomic and umask-following; ``verify``
checks a database's invariants and ``info`` summarises it. Everything else imports from here.
"""

from filtershift.store.arrays import grow_rows, layer_of_rows, read_rows, resize_rows, rows_checksum, write_rows
from filtershift.store.database import (
    DEFAULT_CHUNK_ROWS,
    FILTERS_STORE,
    LAYER_COLUMNS,
    LAYER_DTYPES,
    LAYERS_TABLE,
    MODEL_COLUMNS,
    MODEL_DTYPES,
    MODELS_TABLE,
    RESULTS_DIR,
    REMOVED,
    STORAGE_ERRNOS,
    Database,
    DatabaseError,
    StoreChunks,
    accounted_layers,
    aligned_chunks,
    append_rows,
    committed_layers,
    ensure_store,
    is_storage_error,
    live_models,
    open_database,
    read_tables,
    remove_models,
    require_database,
    storage_error_message,
    write_database,
    write_table,
    writer_lock,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS", "FILTERS_STORE", "LAYER_COLUMNS", "LAYER_DTYPES", "LAYERS_TABLE", "MODEL_COLUMNS",
    "MODEL_DTYPES", "MODELS_TABLE", "RESULTS_DIR", "REMOVED", "STORAGE_ERRNOS", "Database", "DatabaseError", "StoreChunks",
    "accounted_layers", "aligned_chunks", "append_rows", "committed_layers", "ensure_store", "is_storage_error",
    "live_models", "open_database", "read_tables", "remove_models", "require_database", "storage_error_message", "write_database", "write_table", "writer_lock",
    "grow_rows", "layer_of_rows", "read_rows", "resize_rows", "rows_checksum", "write_rows",
]
