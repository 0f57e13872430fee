"""Fine-tuning: linear probes on cached features and full fine-tuning, one grid cell at a time.

    from medssl.finetune.run import finetune_cell
    result = finetune_cell(cfg, manifest_df=df, images=cache, budgets_df=budgets, init="random",
                           mode="linear", budget=250, seed=0, out_dir="runs/cell")

Modes: "linear" (L2 logistic regression on frozen features, C chosen on val), "knn" (cosine kNN on
frozen features, k chosen on val), "full" (end-to-end fine-tuning, lr chosen on val).

Modules: labels (CheXpert uncertainty policies, pure numpy), data (labeled sets, image sources),
features (feature cache + the linear head), probe (logistic and kNN probes), module (thin LightningModule for full
fine-tuning), run (the cell: train on train, select on val, then predict test). Importing this
package does not import torch.
"""

#: Fine-tuning modes, cheapest first.
MODES = ("linear", "knn", "full")
#: Modes that fit on cached frozen features (no gradient through the encoder).
PROBE_MODES = ("linear", "knn")
