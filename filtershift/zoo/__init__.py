"""The demo model zoo: procedural data sets (:mod:`.datasets`), small CNNs (:mod:`.models`, the
``zoo:`` arch builder), a frozen build plan (:mod:`.plan`), seeded training (:mod:`.train`), the
training-effect measures (:mod:`.effect`) and the dask build (:mod:`.build`)."""
