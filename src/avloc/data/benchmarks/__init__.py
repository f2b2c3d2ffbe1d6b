"""Benchmark generators with exact per-frame ground truth: the synthetic shapes benchmark
(``synth*``) and the composite one from real cut-outs and recordings (``composite*``), both
drawing object sizes from the real datasets' boxes (``object_sizes``)."""
