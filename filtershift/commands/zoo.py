"""``filtershift zoo DIR``: train the demo model zoo on the CPU and write ``DIR/manifest.csv``."""

from __future__ import annotations

import argparse
import sys
import time

from filtershift.runtime.cluster import add_cluster_arguments, connect, settings_from_args


def register(subparsers) -> None:
    from filtershift.zoo.plan import SIZES

    parser = subparsers.add_parser(
        "zoo",
        help="build the demo model zoo (trained CNNs on procedural data) and its manifest",
        description="Train a seeded, varied zoo of small CNNs (VGG, ResNet, MobileNet, U-Net, DCGAN, "
        "super-resolution, detection) on procedural natural, texture, fractal, medical, seismic and "
        "astronomy images, one dask task per model, and write the checkpoints (state dicts, checkpoint "
        "dicts, safetensors, TorchScript, ONNX, fp16 copies), DIR/manifest.csv and DIR/training_effect.csv. "
        "The same command writes bit-identical checkpoints.",
    )
    parser.add_argument("directory", metavar="DIR", help="output folder (created; existing zoo files are overwritten)")
    parser.add_argument("--size", choices=SIZES, default="small", metavar="{small,large}",
                        help="small (default, ~50 models, 1-2 minutes on 2 cores) or large (~250 checkpoints, "
                        ">10 million 3x3 kernels; wide models train fewer steps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data sets and models (default 0)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (one line per training task) and exit")
    add_cluster_arguments(parser)
    parser.set_defaults(func=execute)


def execute(args: argparse.Namespace) -> int:
    from filtershift.zoo.plan import plan_zoo

    specs = plan_zoo(args.size, args.seed)
    if args.dry_run:
        for s in specs:
            print(f"train-{s.name}\t{s.task}\t{s.data_type}\twidth={s.width}\tsteps={s.steps}\t{s.format}"
                  + ("\t+fp16" if s.fp16_copy else "") + ("\t+init control" if s.control else "") + (f"\t{s.note}" if s.note else ""))
        print(f"{len(specs)} training tasks", file=sys.stderr)
        return 0
    from filtershift.zoo.build import build_zoo, summarize

    start = time.perf_counter()
    with connect(settings_from_args(args)) as _client:
        result = build_zoo(args.directory, args.size, args.seed, specs)
    print(summarize(result))
    print(f"built in {time.perf_counter() - start:.0f} s; manifest: {args.directory}/manifest.csv; "
          f"training effect per model: {args.directory}/training_effect.csv")
    return 0
