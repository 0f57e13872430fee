"""Fine-tuning: linear probes on cached features and full fine-tuning, one grid cell at a time.

    from medssl.finetune.run import finetune_cell
    result = finetune_cell(cfg, manifest_df=df, images=cache, budgets_df=budgets, init="random",
                           mode="linear", budget=250, seed=0, out_dir="runs/cell")

Modules: labels (CheXpert uncertainty policies, pure numpy), data (labeled sets, image sources),
features (feature cache + plain-torch linear head), module (thin LightningModule for full
fine-tuning), run (the cell: train on train, select on val, then predict test). Importing this
package does not import torch.
"""
