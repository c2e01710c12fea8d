"""From a manifest of checkpoints to a filter database: reading the manifest, turning each
checkpoint's convolutions into 3x3 kernel rows with their depths, staging them one task per
checkpoint, and consolidating the staged rows into the store (see docs/design.md §2 and §4)."""
