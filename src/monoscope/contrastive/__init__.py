"""Non-negative contrastive learning (NCL) and its SimCLR baseline.

NCL (Wang et al., *Non-negative Contrastive Learning*, ICLR 2024) trains SimCLR with one
change: the projector output passes through a non-negative map before the InfoNCE
loss, which makes the output dimensions sparse and far more monosemantic. *Beyond
Interpretability* (Zhang et al., ICLR 2025) then measures what that buys: robustness to
label noise, input noise and few-shot training, in linear probing and full finetuning.

One concept per module:

``models``
    ResNet-18 backbone (optionally with the CIFAR stem), projector, non-negative maps
    and :class:`~monoscope.contrastive.models.ContrastiveModel`.
``losses``
    InfoNCE / NT-Xent over two views.
``augment``
    Batched, seeded SimCLR augmentations on tensors.
``pretrain``
    :class:`~monoscope.contrastive.pretrain.PretrainConfig` and the resumable training loop.
``probes``
    Feature extraction, linear probes, full finetuning and selected-dimension probes.
``robustness``
    Label noise, input noise and few-shot subsets.
``metrics``
    Class consistency and sparsity of feature dimensions.
``data``
    CIFAR-10/100 from a local copy, as ``(image, label, sample_id)`` data sets.
"""
