"""``filtershift cluster-script --cluster slurm``: print the exact job script each SLURM worker runs."""

from __future__ import annotations

import sys

from filtershift.runtime.cluster import add_cluster_arguments, settings_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cluster-script",
        help="print the job script that --cluster slurm submits for each worker",
        description="Print the exact SLURM job script of one dask worker, from the packaged defaults, "
        "./cluster/slurm.yaml and --cluster-config, without submitting anything. The scheduler "
        "address is a placeholder (a real run fills in its scheduler's address) unless --scheduler-address is given.",
    )
    add_cluster_arguments(parser)
    parser.add_argument("--scheduler-address", default=None, help="scheduler address to write into the worker command")
    parser.set_defaults(func=execute)


def execute(args) -> int:
    settings = settings_from_args(args)
    if settings.kind != "slurm":
        print("cluster-script: only --cluster slurm submits job scripts; add --cluster slurm", file=sys.stderr)
        return 2
    from filtershift.runtime.slurm import PLACEHOLDER_SCHEDULER, job_script, resolve_slurm_settings

    slurm = resolve_slurm_settings(settings.cluster_config)
    print(f"# settings from: {', '.join(slurm.sources)}", file=sys.stderr)
    sys.stdout.write(job_script(slurm, scheduler=args.scheduler_address or PLACEHOLDER_SCHEDULER))
    return 0
