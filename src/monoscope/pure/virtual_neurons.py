"""Virtual neurons as units: scoring new samples.

A virtual neuron (j, m) is cluster m of channel j's circuits. A new sample x belongs to
the virtual neuron whose centroid is nearest to x's circuit for channel j, and the
virtual neuron's activation is channel j's activation (spatial maximum, after ReLU)
gated by that assignment: (j, m) fires exactly when j fires for the reason m stands for.
Later stages treat virtual neurons like any other unit through this interface.
"""

from __future__ import annotations

import torch

from monoscope.models.registry import SubjectModel
from monoscope.pure.circuits import CircuitComputer


class VirtualNeurons:
    """Score images with the virtual neurons of ``upper``.

    Parameters
    ----------
    model : the subject model.
    lower, upper : the circuit layers.
    centroids : ``[C, k, C_lower]`` circuit centroids per upper channel (rows of NaN
        mark missing clusters, as in automatic k).
    method : the circuit method the centroids were made with.
    batch_rows : (neuron, sample) rows per pass through the sub-network.
    channels : the upper channel of each centroid row (``neurons`` selection); ``None``
        when the rows are every channel in order.
    """

    def __init__(
        self,
        model: SubjectModel,
        lower: str,
        upper: str,
        centroids: torch.Tensor,
        method: str = "gradient",
        batch_rows: int = 512,
        channels: torch.Tensor | None = None,
    ) -> None:
        self.model, self.lower, self.upper = model, lower, upper
        self.centroids = centroids.float()
        if channels is not None and len(channels) != len(centroids):
            raise ValueError(f"{len(channels)} channels for {len(centroids)} centroid rows")
        self.channels = None if channels is None else torch.as_tensor(channels).long()
        self.method = method
        self.batch_rows = batch_rows

    @property
    def shape(self) -> tuple[int, int]:
        """(channels, clusters per channel)."""
        return tuple(self.centroids.shape[:2])

    def assign(self, circuits: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centroid of ``channels[r]`` for each circuit row ``[R, D]``."""
        centroids = self.centroids.to(circuits.device)[channels]  # [R, k, D]
        distances = (circuits[:, None, :] - centroids).norm(dim=2)
        return torch.nan_to_num(distances, nan=float("inf")).argmin(dim=1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Activations ``[B, C, k]`` of the virtual neurons for unnormalised ``images``."""
        activation, nearest = self._score(images)
        gate = torch.nn.functional.one_hot(nearest, self.shape[1])
        return activation[:, :, None] * gate

    def assignments(self, images: torch.Tensor) -> torch.Tensor:
        """The virtual neuron (cluster index) of every channel for each image, ``[B, C]``."""
        return self._score(images)[1]

    def _score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel activations (spatial maximum, after ReLU) and nearest clusters, ``[B, C]``."""
        device = next(self.model.net.parameters()).device
        channels_count, _ = self.shape
        with CircuitComputer(self.model, self.lower, self.upper, self.method) as computer:
            lower = computer.lower_activations(self.model.normalize(images.to(device)))
            with torch.no_grad():
                upper = computer.subnet(lower.clone())
            activation = upper.reshape(*upper.shape[:2], -1).amax(dim=2).clamp(min=0)  # [B, C]
            if self.channels is not None:
                if int(self.channels.max()) >= activation.shape[1]:
                    raise ValueError(
                        f"channels {self.channels.tolist()} exceed the {activation.shape[1]} "
                        f"channels of {self.upper}"
                    )
                activation = activation[:, self.channels.to(activation.device)]
            if activation.shape[1] != channels_count:
                raise ValueError(
                    f"{channels_count} centroid rows for {activation.shape[1]} channels"
                )
            batch = len(images)
            row_sample = torch.arange(batch).repeat_interleave(channels_count)
            row_index = torch.arange(channels_count).repeat(batch)  # centroid row
            row_channel = row_index if self.channels is None else self.channels[row_index]
            nearest = torch.empty(batch * channels_count, dtype=torch.int64)
            for start in range(0, len(row_sample), self.batch_rows):
                rows = slice(start, start + self.batch_rows)
                circuits, _ = computer.rows(lower[row_sample[rows].to(device)], row_channel[rows])
                nearest[rows] = self.assign(circuits, row_index[rows].to(device)).cpu()
        return activation.cpu(), nearest.view(batch, channels_count)
