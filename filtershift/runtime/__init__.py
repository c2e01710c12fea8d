"""Where and how the work runs: the cluster edge (local, an existing scheduler, SLURM), progress
display, worker-process settings and the fault-injection points of the tests. Stage code never
imports from here except to report progress; it only builds dask collections."""
