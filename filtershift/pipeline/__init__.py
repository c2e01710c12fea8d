"""``filtershift run JOB.yaml``: the job spec (``jobspec``) and its stages (``stages``), each stage
skipped when its outputs are current."""
