"""Masked autoencoder, MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners").

The image is cut into p x p patches (p = model.patch_size); a random `ssl.mask_ratio` of them
(default 0.75) is removed, the ViT encoder sees only the visible patches, and a light transformer
decoder (`ssl.decoder_dim` wide, `ssl.decoder_depth` blocks) gets the encoded visible tokens plus a
shared learnt mask token at every masked position, with fixed 2D sin-cos position embeddings, and
predicts the pixels of every patch. The loss is the mean squared error on the MASKED patches only
(predicting visible pixels is copying); with `ssl.norm_pix_loss` (default true) each target patch
is normalised to mean 0, variance 1 (unbiased variance + 1e-6, as in the reference code), which
the paper found gives better features: the decoder is not spent on each patch's brightness.

The encoder is medssl's `Encoder` around a plain MONAI `ViT` (`model.arch: vit_*`): MAE calls its
`patch_embedding` (patch conv + position embedding), `blocks` and `norm` on the visible tokens
only, so the exported backbone is the same plain ViT state dict every other method writes, and the
decoder (only used here) is not part of it. MONAI's own `MaskedAutoEncoderViT` is not used: its
encoder keys differ from `ViT`'s (its final LayerNorm sits inside `blocks`) and it prepends a CLS
token the medssl encoder does not have. MAE refuses a non-ViT encoder (ConfigError).

One view per image: `view_a` is masked and reconstructed, `view_b` is ignored (MAE relies on
masking, not on augmentation; see `medssl.ssl.pretext`). Shapes: view_a (B, 1, S, S) float in
[0, 1], S = model.input_size; N = (S/p)^2 patches; patches (B, N, p*p) in the order of MONAI's
patch tokens (row-major over the patch grid); mask (B, N) float, 1 = masked.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from medssl.config import SSLConfig
from medssl.errors import ConfigError
from medssl.models.backbones import freeze_unused_cross_attention
from medssl.ssl.losses import feature_std
from medssl.ssl.pretext import PretextMethod


def patchify(x: Tensor, p: int) -> Tensor:
    """(B, C, H, W) -> (B, N, p*p*C) patches, N = (H/p)(W/p), row-major over the patch grid.

    Patch n = (i, j) with n = i * (W/p) + j, flattened as (row in patch, column in patch, channel):
    the order of MONAI's conv patch embedding (`flatten(2).transpose(1, 2)` of its (B, D, H/p, W/p) map).
    """
    b, c, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not divisible into {p}x{p} patches")
    gh, gw = h // p, w // p
    return x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, p * p * c)


def unpatchify(patches: Tensor, p: int, h: int, w: int, c: int = 1) -> Tensor:
    """Inverse of `patchify`: (B, N, p*p*C) -> (B, C, H, W)."""
    b = patches.shape[0]
    gh, gw = h // p, w // p
    return patches.reshape(b, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


def random_masking(noise: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """MAE's per-sample random masking from uniform `noise` (B, N): the lowest-noise tokens stay visible.

    Returns (ids_keep (B, K) int64, mask (B, N) float with 1 = masked, ids_restore (B, N) int64),
    K = int(N * (1 - mask_ratio)) clamped to [1, N - 1], so every sample keeps K tokens (equal-length
    sequences, no padding) and at least one patch is masked.
    """
    b, n = noise.shape
    keep = min(max(int(n * (1 - mask_ratio)), 1), n - 1)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(b, n, device=noise.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)   # back to patch order
    return ids_shuffle[:, :keep], mask, ids_restore


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """Mean over MASKED patches of the per-patch mean squared error.

    pred, target: (B, N, P) (P pixels per patch; target = patchify(image)); mask: (B, N), 1 = masked.
    norm_pix: target patch -> (t - mean(t)) / sqrt(var(t) + 1e-6), unbiased var, per patch (the
    reference implementation). Computed in float32.
    """
    pred, target, mask = pred.float(), target.float(), mask.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)            # (B, N)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


def _sincos(grid: int, dim: int) -> Tensor:
    from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding

    with warnings.catch_warnings():   # MONAI calls torch.meshgrid without indexing=
        warnings.filterwarnings("ignore", message=".*torch.meshgrid.*")
        return build_sincos_position_embedding([grid, grid], dim, 2).detach().clone()   # (1, N, dim)


class MAEDecoder(nn.Module):
    """(B, K, D) visible latents + ids_restore -> (B, N, p*p) predicted pixels of every patch."""

    def __init__(self, enc_dim: int, n_patches: int, patch: int, dim: int = 256, depth: int = 4, heads: int = 8):
        super().__init__()
        from monai.networks.blocks.transformerblock import TransformerBlock

        grid = int(round(n_patches ** 0.5))
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", _sincos(grid, dim), persistent=False)   # fixed, as in MAE
        self.blocks = nn.ModuleList([TransformerBlock(dim, 4 * dim, heads, 0.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch * patch)   # grey pixels, whatever the encoder's in_channels
        freeze_unused_cross_attention(self.blocks)   # never used: DDP needs every trained parameter used
        nn.init.normal_(self.mask_token, std=0.02)
        for m in (self.embed, self.pred):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.embed(latent)                                            # (B, K, dim)
        b, k, d = x.shape
        n = ids_restore.shape[1]
        x = torch.cat([x, self.mask_token.expand(b, n - k, d).to(x.dtype)], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))   # unshuffle to patch order
        x = x + self.pos.to(x.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))


class MAE(PretextMethod):
    """forward(view_a, view_b, patient=None) -> (loss, logs): MAE on view_a; logs feat_std (of the visible
    token features), mask_frac."""

    requires_vit = True   # build refuses any other encoder

    def __init__(self, encoder: nn.Module, cfg: SSLConfig):
        super().__init__()
        from monai.networks.nets import ViT

        if not isinstance(getattr(encoder, "net", None), ViT):
            arch = getattr(getattr(encoder, "spec", None), "arch", type(encoder).__name__)
            raise ConfigError(f"ssl.method mae needs a ViT encoder (model.arch: vit_tiny, vit_small or vit_base), got "
                              f"{arch}: MAE removes the masked patches from the encoder's input, which only a "
                              "patch-token encoder can do")
        self.encoder = encoder
        emb = encoder.net.patch_embedding
        self.patch = int(emb.patch_embeddings.kernel_size[0])
        self.n_patches = int(emb.n_patches)
        self.mask_ratio = float(cfg.mask_ratio)
        self.norm_pix = bool(cfg.norm_pix_loss)
        self.decoder = MAEDecoder(encoder.feature_dim, self.n_patches, self.patch, cfg.decoder_dim,
                                  cfg.decoder_depth, cfg.decoder_heads)

    def encode_visible(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B,1,S,S) -> (latent (B, K, D) after the final LayerNorm, mask (B, N), ids_restore (B, N)).

        noise (B, N) fixes the mask (tests); default uniform random from the global torch RNG.
        """
        net = self.encoder.net
        tokens = net.patch_embedding(self.encoder.prepare(x))                 # (B, N, D), position added
        if noise is None:
            noise = torch.rand(tokens.shape[:2], device=tokens.device)
        ids_keep, mask, ids_restore = random_masking(noise, self.mask_ratio)
        h = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        for blk in net.blocks:
            h = blk(h)
        return net.norm(h), mask, ids_restore

    def forward_parts(self, x: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(pred (B, N, p*p), mask (B, N), latent (B, K, D)) for images x (B,1,S,S) in [0, 1]."""
        latent, mask, ids_restore = self.encode_visible(x, noise)
        return self.decoder(latent, ids_restore), mask, latent

    def forward(self, view_a: Tensor, view_b: Tensor | None = None, patient: Tensor | None = None):
        pred, mask, latent = self.forward_parts(view_a)
        # target: the grey input pixels (not the encoder-normalised ones; norm_pix makes that moot)
        loss = mae_loss(pred, patchify(view_a[:, :1], self.patch), mask, self.norm_pix)
        with torch.no_grad():
            # Collapse detector on the encoded visible TOKENS (B*K, D), the representation MAE trains and
            # the decoder reads; 0 when the encoder maps everything to one vector. Not on their mean: a
            # ViT's mean-pooled features share a large image-independent part (the position embeddings
            # of all tokens), which keeps their normalised std near 0.005-0.015 even when healthy.
            logs = {"feat_std": feature_std(latent.reshape(-1, latent.shape[-1])), "mask_frac": mask.mean()}
        return loss, logs
