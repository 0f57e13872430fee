"""Rotation prediction (Gidaris et al. 2018, "Unsupervised Representation Learning by Predicting
Image Rotations"): which of 0, 90, 180, 270 degrees was an image rotated by? A 4-way classifier on
the encoder's features.

Why it is learnable for chest X-ray (and most radiographs, CT and MR slices): anatomy has a
canonical orientation in a stored image. A frontal chest film has the lung apices up and the
diaphragm down, the heart on the patient's left (the image's right in PA display), the spine in the
midline; a rotated copy moves these to places they never are. The network can only tell the four
rotations apart by finding them, so it learns orientation cues: where the apices, the diaphragm,
the mediastinum and the heart border are. The pretraining policy's random left-right flip does not
make the task ambiguous: it keeps apices up, so 90 and 270 degrees still put them on different sides.
What it does NOT teach is fine density texture; expect it to be weaker than contrastive methods for
findings that are local.

The rotations are a PRETEXT only, not an augmentation: the 90/180/270 degree copies exist inside
this loss and their label is the rotation, so the encoder is trained to tell them apart, never to
treat them as the same image. The fine-tuning augmentation policy (rotations of at most a few
degrees, no flips upside down; `medssl.augment.policies`) is unaffected and still applies to every
image the classifier is trained on.

As in the paper all four rotations of every image are in the batch (4B images through the
encoder: 4x the compute of a single-rotation step), so each image contributes a balanced 4-way
problem. Only view_a is used (`medssl.ssl.pretext`). Rotation k turns the image by k * 90 degrees
counter-clockwise (`torch.rot90(x, k, dims=(2, 3))`); views must be square.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import MLPHead
from medssl.ssl.losses import feature_std
from medssl.ssl.pretext import PretextMethod

N_ROTATIONS = 4


def rotate_batch(x: Tensor) -> tuple[Tensor, Tensor]:
    """(B, C, S, S) -> (all four rotations (4B, C, S, S), labels (4B,) int64).

    Rows [kB, (k+1)B) hold `torch.rot90(x, k, dims=(2, 3))` with label k (k * 90 degrees CCW).
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation prediction needs square images, got {tuple(x.shape[-2:])}")
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(N_ROTATIONS)])
    labels = torch.arange(N_ROTATIONS, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


class RotationPrediction(PretextMethod):
    """forward(view_a, view_b, patient=None) -> (CE loss over 4 rotations, logs feat_std, acc)."""

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        # one hidden layer on the pooled features (the paper's classifier sits on conv features; an
        # MLP keeps the task head-agnostic across CNN and ViT encoders)
        self.head = MLPHead(encoder.feature_dim, cfg.proj_hidden, N_ROTATIONS)

    def forward(self, view_a: Tensor, view_b: Tensor | None = None, patient: Tensor | None = None):
        x, labels = rotate_batch(view_a)
        feats = self.encoder(x)
        logits = self.head(feats).float()
        loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            logs = {"feat_std": feature_std(feats), "acc": (logits.argmax(dim=1) == labels).float().mean()}
        return loss, logs
