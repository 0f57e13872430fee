"""Feature analysis of one encoder: kNN evaluation, retrieval, first-layer kernels, saliency, 2-D embedding.

    from medssl.analyze import run_analysis
    result = run_analysis(cfg, "runs/moco/encoder.pt", manifest_df, images, "runs/analysis/moco")

writes, into the output folder (fixed file names, nothing derived from manifest paths or ids):
knn.json + knn.md (per-class test AUC of a cosine kNN probe on all training images, k chosen on
val), retrieval.png + retrieval.json (test queries and their nearest training images, same-patient
images excluded), kernels.png (first conv filters vs the study's random init and `compare`
encoders), saliency.png (Grad-CAM of a fine-tuned classifier and/or occlusion sensitivity),
embedding.png + embedding.csv (PCA / t-SNE coloured by label and by site) and index.md.

Modules, one per tool: knn, retrieval, kernels, saliency, embedding; `run` ties them together,
`study` runs them for every init of a study and writes the report's links. Figures show pixels
and label names only: titles never carry a patient id, a path or a file name.
"""

from __future__ import annotations

__all__ = ["run_analysis", "AnalysisOptions"]


def __getattr__(name):   # lazy: importing medssl.analyze does not import torch
    if name in __all__:
        from medssl.analyze import run

        return getattr(run, name)
    raise AttributeError(name)
