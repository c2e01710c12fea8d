"""The published CNN-Filter-DB format (Gavrikov & Keuper): :mod:`.mapping` is the pure table
mapping, :mod:`.hdf5` the HDF5 reading and writing around it."""

from filtershift.cnnfilterdb.hdf5 import ImportResult, Source, export_file, import_file, read_source
from filtershift.cnnfilterdb.mapping import ColumnMap, FormatError, ImportTables, plan_export, plan_import

__all__ = [
    "ColumnMap", "FormatError", "ImportTables", "ImportResult", "Source", "export_file", "import_file",
    "plan_export", "plan_import", "read_source",
]
