"""Equivariant sparse autoencoders on symmetric data (Erdogan & Lucic 2025).

A model trained on data with a symmetry (here the rotations by 90 degrees) tends to
represent the symmetry linearly: the latents of an image's rotations are related by one
matrix, ``h(g x) ~ M h(x)``. A vanilla SAE ignores this and may spend separate features
on each pose of one concept; an *equivariant* SAE builds the symmetry into its prior
(invariant codes, directions that transform with M), and an *archetypal* SAE ties its
dictionary to the data. The pieces, one concept per module:

``orbits``
    Exact rotation orbits of images (``torch.rot90``), orbit-major layout, orbit-level
    train/test splits.
``shapes``
    The procedural shapes data set: oriented shapes with known attributes (shape, colour,
    background, orientation, size, position), closed under C4; safetensors files.
``tasks``
    Binary probe tasks from the attributes (one-vs-rest, thresholds, conjunctions).
``data``
    Real images with a rotation symmetry (GalaxyMNIST-style) from an ImageFolder layout
    or an ``.npz`` archive; one-vs-rest class tasks.
``autoencoders``
    Base autoencoders (``mlp``, ``cnn``, ``vit``) with a 256-d latent; resumable training
    with quarter-turn augmentation; orbit latents ``[N, n, d]``.
``symmetry``
    The latent action M by least squares, its fit quality (the base model's equivariance
    measure), its powers and the maps to and from the canonical frame.
``saes``
    TopK SAEs on orbit latents: ``vanilla``, ``equivariant`` (``latent_inv``,
    ``canonical``, ``output_inv``) and ``archetypal``; resumable training; FVU, L0, dead
    features.
``probes``
    Logistic and XGBoost probes on the top-t latents per task; F1 tables.
``checkpoints``
    Seeded per-epoch generators and training checkpoints in safetensors.

Nothing is re-exported here: import from the modules.
"""
