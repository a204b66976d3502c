"""The equivariant branch's tables, from the records its workflow jobs write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

FAMILY_ORDER = ("base", "vanilla", "equivariant", "archetypal")


def sae_label(family: str, loss: str) -> str:
    """``base``, ``vanilla``, ``equivariant latent_inv``, ... (the loss only where it varies)."""
    return f"{family} {loss}" if family == "equivariant" else family


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    rank = frame["family"].map({family: i for i, family in enumerate(FAMILY_ORDER)})
    return frame.assign(_rank=rank).sort_values(["architecture", "_rank", "loss"], kind="stable")


def probe_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean F1 over tasks, rows (architecture, SAE, probe), one column per t.

    ``results`` has the columns of :func:`monoscope.equivariant.probes.run_probes` plus
    ``architecture`` and ``loss``.
    """
    if results.empty:
        raise ValueError("no probe results to tabulate")
    means = (
        results.groupby(["architecture", "family", "loss", "probe", "t"], sort=False)["f1"]
        .mean()
        .reset_index()
    )
    means = _order(means)
    means["sae"] = [
        sae_label(family, loss) for family, loss in zip(means["family"], means["loss"], strict=True)
    ]
    table = means.pivot_table(
        index=["architecture", "sae", "probe"], columns="t", values="f1", sort=False
    ).round(3)
    table = table[sorted(table.columns)]
    table.columns = pd.Index([f"t={t}" for t in table.columns], name="truncation")
    return table


def reconstruction_table(metrics: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (architecture, SAE): FVU, normalised MSE, L0, dead fraction, orbit variance."""
    rows = []
    for record in metrics:
        test = record["test"]
        rows.append(
            {
                "architecture": record["architecture"],
                "family": record["family"],
                "loss": record["loss"],
                "sae": sae_label(record["family"], record["loss"]),
                "features": record["num_features"],
                "FVU": round(test["fvu"], 4),
                "normalized MSE": round(test["normalized_mse"], 4),
                "L0": round(test["l0"], 2),
                "dead fraction": round(test["dead_fraction"], 3),
                "orbit variance": round(test["orbit_code_variance"], 3),
            }
        )
    frame = _order(pd.DataFrame(rows))
    return frame.drop(columns=["family", "loss", "_rank"]).set_index(["architecture", "sae"])


def symmetry_table(fits: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Rows architecture: M's relative error per power, train and test, R^2, identity error."""
    rows = []
    for architecture, fit in fits.items():
        row = {"architecture": architecture}
        for split in ("train", "test"):
            for power, error in enumerate(fit[split]["power_errors"], start=1):
                row[f"{split} M^{power}"] = round(error, 4)
        row["test R2"] = round(fit["test"]["r2"], 4)
        row["M = I"] = round(fit["test"]["identity_error"], 4)
        rows.append(row)
    return pd.DataFrame(rows).set_index("architecture")
