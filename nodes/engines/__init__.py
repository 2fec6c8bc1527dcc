"""The engines: the objects a node installs into the host's model or sampler, one concept per module.

A node (``nodes/<node>.py``) is schema and execute: it parses its inputs, builds an engine and hands it to
ComfyUI. The engines are what then runs inside the host's sampling: ``ModelPatcher`` patches and wrappers
(``attn1_patch`` and ``attn1`` replaces, post-CFG functions, ``OUTER_SAMPLE`` wrappers), guiders, samplers
and noise. Each module's docstring names the paper equation it implements; the math itself is in ``kernels``.

* ``slr_temporal_attention.py``: ZVRD's SLR temporal attention (eq. 5-7), ``SLRPatch`` and its run state.
* ``temporal_consistency_guidance.py``: ZVRD's temporal consistency guidance (eq. 8-10), ``TCGPatch``.
* ``swcfa.py``: TDM's sliding-window cross-frame attention (eq. 7-9), ``SWCFAPatch``.
* ``noise_sharing.py``: ZVRD's noise sharing (eq. 11), ``SharedNoise`` and ``NoiseSharingSampler``.
* ``early_stop.py``: ZVRD's early stop at T_ES, ``EarlyStopSampler``.
* ``inversion.py``: edit-friendly DDPM (or DDIM) inversion and its replay, ``InversionRunner``,
  ``InversionNoise``, ``ReplaySampler``.
* ``negative_prompt_guider.py``: ZSVD's editing guider, ``NegativePromptGuider``.

The rules (``nodes.run_state``):

* An engine's **configuration is immutable** once the node built it, and shared by every
  ``ModelPatcher.clone()`` (a patch is a ``run_state.Config``: ``copy.deepcopy`` returns the object itself);
  caches on it are pure functions of the configuration (and bounded).
* **Run state is per run**: a fresh object that the engine's ``OUTER_SAMPLE`` wrapper creates at the start of
  every sampling run and puts in that run's ``transformer_options``, where the hooks look it up; nothing of
  one run leaks into the next or into a clone.

Engines import ``comfy`` where they must (they live inside the host); what they share with the nodes
(``run_state``, ``switch_protocol``, ``frame_layout``, ``host``, the adapters' registry) stays in ``nodes/``.
"""
