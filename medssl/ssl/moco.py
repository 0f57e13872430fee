"""MoCo v2 (He et al. 2020; Chen et al. 2020), after facebookresearch/moco/builder.py.

Query encoder + MLP projection (online, trained); key encoder + projection, an EMA copy
(`momentum_update`, called by the trainer after each optimizer step); a queue of K past keys as
negatives. Patient-aware: the queue remembers each key's patient code, and negatives from the
anchor's own patient are masked out (with few patients the queue otherwise fills with keys of
the anchor's own studies and the loss pushes apart images that should agree).

Empty slots are not negatives. The reference starts from a queue of random unit vectors; they are
nearly orthogonal to every real feature, so until the queue has been overwritten (K / B steps) the
loss rewards pulling all features towards one direction: on short or small-archive runs MoCo v2's
head then collapses (feat_std 0.007 after 10 steps at batch 32, 32 px, measured on the embedded
images) and the loss sits at ln(K+1) for the rest of the run. Here a slot counts as a negative only
once a real key has been written to it; the very first step has no negatives (loss 0).

The queue, its patient codes and its pointer are buffers: saved in checkpoints, restored on
resume. The EMA helpers live in `medssl.ssl.ema` (BYOL, MoCo v3 and DINO build on its
`TargetNetworkMethod`; MoCo keeps its reference names encoder_k / projector_k).
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.models.heads import mocov2_projection
from medssl.ssl import distributed as D
from medssl.ssl.ema import momentum_encoder, update_momentum  # noqa: F401  (re-exported)
from medssl.ssl.losses import feature_std, info_nce, mean_cosine

#: Patient code of a key whose patient is unknown (no `patient` passed); never masked as same-patient.
NO_PATIENT = -1
#: Patient code of a queue slot that holds no real key yet (the random initial queue); always masked.
EMPTY_SLOT = -2


class MoCo(nn.Module):
    """forward(view_a, view_b, patient=None) -> (loss, logs); view_a -> queries, view_b -> keys."""

    has_momentum_network = True
    #: SyncBN under DDP only without shuffle-BN (its other remedy for BN leaking across the pair);
    #: the class default matches the config default `ssl.shuffle_bn: true`, instances set their own
    global_batchnorm = False

    @staticmethod
    def global_batchnorm_for(cfg: SSLConfig) -> bool:
        """Whether a MoCo configured by `cfg` wants SyncBN under DDP (read by `wants_sync_batchnorm`)."""
        return not cfg.shuffle_bn

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        self.encoder = encoder
        self.projector = mocov2_projection(encoder.feature_dim, cfg.proj_hidden, cfg.proj_dim,
                                           batch_norm=cfg.proj_batchnorm)
        self.encoder_k = momentum_encoder(self.encoder)
        self.projector_k = momentum_encoder(self.projector)
        self.temperature = cfg.temperature
        self.momentum = cfg.momentum               # the trainer may set a schedule value per step
        self.shuffle_bn = cfg.shuffle_bn
        self.global_batchnorm = self.global_batchnorm_for(cfg)
        self.bn_splits = max(1, int(cfg.bn_splits))
        self.mask_same_patient = cfg.mask_same_patient
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.proj_dim), dim=1))
        self.register_buffer("queue_patient", torch.full((cfg.queue_size,), EMPTY_SLOT, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------------- EMA
    def momentum_update(self, m: float | None = None) -> None:
        """Move the key encoder towards the query encoder; m defaults to `self.momentum`."""
        m = self.momentum if m is None else m
        update_momentum(self.encoder_k, self.encoder, m)
        update_momentum(self.projector_k, self.projector, m)

    def on_train_batch_end(self) -> None:
        self.momentum_update()

    # ------------------------------------------------------------------------- queue
    @torch.no_grad()
    def enqueue(self, keys: Tensor, patient: Tensor | None = None) -> None:
        """Write (n, D) keys from all ranks (gathered here) at the pointer, wrapping around."""
        keys = D.concat_all_gather(keys.detach().to(self.queue.dtype))
        if patient is None:
            patient = torch.full((keys.shape[0],), NO_PATIENT, dtype=torch.long, device=keys.device)
        else:
            patient = D.concat_all_gather(patient.to(device=keys.device, dtype=torch.long))
        size, n, ptr = self.queue.shape[0], keys.shape[0], int(self.queue_ptr)
        # slot of each key as if written one by one; a batch larger than the queue keeps its newest
        idx = ((ptr + torch.arange(n, device=keys.device)) % size)[-size:]
        self.queue[idx] = keys[-size:]
        self.queue_patient[idx] = patient[-size:]
        self.queue_ptr.fill_((ptr + n) % size)

    # ------------------------------------------------------------------------- forward
    def _keys(self, view_b: Tensor) -> Tensor:
        with torch.no_grad():
            if self.shuffle_bn and self.training:
                x, idx_unshuffle = D.batch_shuffle_ddp(view_b)
                if D.is_distributed():
                    k = self.projector_k(self.encoder_k(x))
                else:
                    # One process: a shuffle alone leaves the BN statistics of the batch unchanged, so
                    # queries and keys would share them and the loss can be solved through BN ("cheating",
                    # He et al. 2020). Running the shuffled keys in chunks gives them their own statistics,
                    # as several GPUs would (the SplitBatchNorm of the reference's one-GPU demo).
                    chunks = x.chunk(min(self.bn_splits, max(1, x.shape[0] // 2)))
                    k = torch.cat([self.projector_k(self.encoder_k(c)) for c in chunks])
                k = D.batch_unshuffle_ddp(k, idx_unshuffle)
            else:
                k = self.projector_k(self.encoder_k(view_b))
        return F.normalize(k.float(), dim=1)

    def forward(self, view_a: Tensor, view_b: Tensor, patient: Tensor | None = None):
        q = F.normalize(self.projector(self.encoder(view_a)).float(), dim=1)
        k = self._keys(view_b)
        queue = self.queue.clone().detach()  # enqueue below writes in place
        mask = (self.queue_patient == EMPTY_SLOT).view(1, -1).expand(q.shape[0], -1)
        same_patient = None
        if patient is not None and self.mask_same_patient:
            same_patient = patient.view(-1, 1).to(self.queue_patient.device) == self.queue_patient.view(1, -1)
            mask = mask | same_patient
        loss = info_nce(q, k, queue, self.temperature, mask)
        with torch.no_grad():
            logs = {
                "pos_sim": (q * k).sum(dim=1).mean(),
                "neg_sim": mean_cosine(q, queue, ~mask),
                "feat_std": feature_std(q),
                "masked_negatives": (same_patient.float().mean() if same_patient is not None
                                     else q.new_zeros(())),
            }
        if self.training:
            self.enqueue(k, patient)
        return loss, logs
