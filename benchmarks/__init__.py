"""fer_bench: benchmarks (installed as ``fer_bench``; the source folder is ``benchmarks/``)."""
