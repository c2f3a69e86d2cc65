"""What tempnlp offers, for ``tempnlp losses`` and the README table."""

from __future__ import annotations

LOSSES = [
    (
        "InfoNCELoss",
        "InfoNCE / SimCSE / MNRL: in-batch + hard negatives, optional symmetric term",
        "van den Oord et al. 2018; Gao et al. 2021 (SimCSE)",
    ),
    (
        "DCLLoss",
        "decoupled contrastive loss (positive out of the denominator); sigma=0.5 gives DCLW",
        "Yeh et al. 2022 (ECCV)",
    ),
    (
        "SogCLRLoss",
        "per-sample moving average of the partition function, one fixed tau",
        "Yuan et al. 2022 (SogCLR), arXiv 2202.12387",
    ),
    (
        "ISogCLRLoss",
        "one learned tau per training sample (KL-ball DRO), per-sample state saved in checkpoints",
        "Qiu et al. 2023 (iSogCLR), arXiv 2305.11965",
    ),
    (
        "TempNetLoss",
        "tau predicted from the embedding by a small network, trained by the same DRO objective",
        "Qiu et al. 2024 (TempNet), arXiv 2404.04575",
    ),
]

POLICY_DESCRIPTIONS = [
    ("fixed", "FixedTemperature", "one constant tau (SimCSE/MNRL: 0.05)", "Gao et al. 2021"),
    (
        "learnable",
        "LearnableTemperature",
        "tau learned as log(1/tau), projected to tau >= min_tau (CLIP)",
        "Radford et al. 2021 (CLIP)",
    ),
    (
        "macl",
        "MACLTemperature",
        "tau per batch from the positives' alignment, optional 1/(1-P) reweighting",
        "Huang et al. 2023 (MACL), arXiv 2207.07874",
    ),
    (
        "dystress",
        "DySTreSSTemperature",
        "tau per similarity entry, a cosine function of the similarity",
        "Manna et al. 2023 (DySTreSS), arXiv 2308.01140",
    ),
]


def describe() -> str:
    lines = ["Losses (tempnlp.losses):"]
    lines += [f"  {name:<22} {text}  [{paper}]" for name, text, paper in LOSSES]
    lines += ["", "Temperature policies (tempnlp.temperature):"]
    lines += [f"  {key:<10} {name:<22} {text}  [{paper}]" for key, name, text, paper in POLICY_DESCRIPTIONS]
    lines += [
        "",
        "Recipes (tempnlp train) name a loss by its class name, or sentence-transformers' "
        "MultipleNegativesRankingLoss (scale = 1/tau) as the fixed-temperature reference, and a policy by its key.",
    ]
    return "\n".join(lines)
