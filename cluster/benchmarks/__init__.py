"""Every benchmark of `d2d bench NAME`, in one place (comparison-only dependencies: the `bench` extra).

    d2d bench all --run-dir bench     # make bench

One module per target, each with `run_bench(out_dir, quick) -> dict` (cluster/bench.py lists them).
They sit above the stages (cluster/ imports everything), so a benchmark may compare across layers.
"""
