"""What the single-image methods (pretext tasks and MAE) share.

They solve a task built from ONE image: rotation prediction, jigsaw, inpainting, masked image
modelling. The contract is the registry's (`forward(view_a, view_b, patient=None) -> (loss, logs)`,
views (B,1,H,W) float in [0, 1]) with these differences from the joint-embedding methods:

- only `view_a` is used; `view_b` is IGNORED (the data module still draws two views for every
  method; a second augmentation of the same image would only double the compute of a task that
  never compares images). `patient` is ignored too: no pair of samples is compared, so there are
  no negatives to mask.
- logs hold `feat_std` (std of the L2-normalised encoder features the loss was computed from,
  `medssl.ssl.losses.feature_std`, the trainer's collapse detector) and task metrics (e.g. `acc`),
  but no `pos_sim` / `neg_sim`: there are no positive or negative pairs. `compares_views = False`
  says so to code that iterates over METHODS.
- with a ViT encoder the mean-pooled features share a large image-independent component (the
  position embeddings of every token), so their feat_std reads lower than a CNN's (measured at
  32 px: vit_tiny 0.011-0.03 at init, jigsaw's standardised and upsampled tiles lowest, vs 0.033
  for ResNet-18). If the collapse warning fires on a ViT run whose loss is falling, lower
  `ssl.collapse_threshold` (e.g. 0.003). MAE logs the std of its token features instead (`mae.py`).
- no momentum network, no projector; `global_batchnorm = False`: the objective is per image and
  does not rely on batch statistics (a ResNet's BatchNorm still normalises per device, which is
  harmless here).
"""

from __future__ import annotations

from medssl.ssl.single_network import SingleNetworkMethod


class PretextMethod(SingleNetworkMethod):
    """Base of the single-image methods (see the module docstring)."""

    compares_views = False
    global_batchnorm = False
