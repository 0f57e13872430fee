"""DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"),
after facebookresearch/dino main_dino.py.

Student = encoder + DINO head (3-layer GELU MLP, L2-normalised bottleneck, weight-normalised last
layer to `ssl.dino_out_dim` logits); teacher = an EMA copy of both (`momentum_update(m)` after
each optimizer step; the trainer ramps m from `ssl.momentum` to 1 with a cosine, the paper's
0.996 -> 1). The teacher's logits of one full-size view, centred and sharpened
(softmax((t - c) / `ssl.dino_teacher_temp`)), are the targets of the student's logits of the
other crops (softmax(s / `ssl.dino_student_temp`)), cross-entropy averaged over the pairs.

The centre c (a buffer, saved in checkpoints) follows the teacher's mean logit over the GLOBAL
batch as an EMA with `ssl.dino_center_momentum` (0.9): sum and count all-reduced over ranks, as
the reference's update_center. Without it the teacher collapses onto one output dimension (the
tests show it). No negatives, no large batch needed (the paper trains at 1024 but reports 128
working). Multi-crop as SwAV (`medssl.ssl.multicrop`): the teacher sees only the two full-size
views, the student all crops. The reference's teacher-temperature warm-up, last-layer freeze for
the first epoch and gradient clipping are not implemented.

Optimiser: the reference trains with AdamW at lr 5e-4 * batch / 256 after a 10-epoch warm-up. Its
head starts tiny (truncated-normal 0.02) and L2-normalises the bottleneck, so the first gradients
are large and per-sample signal is small next to the biases: SGD at SimCLR's lr 0.05 collapses
the head in one step (feat_std 0.14 -> 0.002 measured on the embedded images), AdamW at 5e-4 does not.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import DINOHead
from medssl.ssl.losses import pair_monitors
from medssl.ssl.losses_noncontrastive import dino_center, dino_loss
from medssl.ssl.ema import TargetNetworkMethod
from medssl.ssl.multicrop import check_multicrop, local_crops


class DINO(TargetNetworkMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs); `patient` is accepted and unused.

    logs add `teacher_entropy`: the mean entropy (nats) of the teacher's centred, sharpened output,
    0 when every sample's target is one-hot, ln(dino_out_dim) when uniform.
    """

    #: SyncBN under DDP, as the reference (a ResNet backbone's BN layers over the global batch)
    global_batchnorm = True

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        check_multicrop(cfg.multicrop_n, cfg.multicrop_size, cfg.multicrop_scale)
        self.encoder = encoder
        self.projector = DINOHead(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim, cfg.dino_out_dim)
        self.init_target(cfg.momentum)
        self.student_temp, self.teacher_temp = cfg.dino_student_temp, cfg.dino_teacher_temp
        self.center_momentum = cfg.dino_center_momentum
        self.multicrop = (cfg.multicrop_n, cfg.multicrop_size, tuple(cfg.multicrop_scale))
        self.register_buffer("center", torch.zeros(cfg.dino_out_dim))


    def teacher_targets(self, teacher_logits: Tensor) -> Tensor:
        """The teacher's target distributions softmax((t - center) / teacher_temp), (B, K)."""
        return torch.softmax((teacher_logits.float() - self.center) / self.teacher_temp, dim=-1)

    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        n = view_a.shape[0]
        views = torch.cat([view_a, view_b])
        e = self.projector.embed(self.encoder(views))
        student = list(self.projector.logits(e).float().split(n))
        n_local, size, scale = self.multicrop
        if n_local:
            small = torch.cat(local_crops(view_a, view_b, n_local, size, scale))
            student += list(self.projector(self.encoder(small)).float().split(n))
        with torch.no_grad():
            e_t = self.projector_target.embed(self.encoder_target(views))
            teacher = self.projector_target.logits(e_t).float()
        center = self.center.clone()      # the update below writes in place
        loss = dino_loss(student, list(teacher.split(n)), center, self.student_temp, self.teacher_temp)
        with torch.no_grad():
            targets = self.teacher_targets(teacher)
            logs = pair_monitors(e[:n], e_t[n:])   # student view a vs teacher view b (bottleneck)
            logs["teacher_entropy"] = -(targets * targets.clamp(min=1e-12).log()).sum(dim=1).mean()
            if self.training:
                self.center.copy_(dino_center(self.center, teacher, self.center_momentum))
        return loss, logs
