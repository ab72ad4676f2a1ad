"""PCA of trajectories of recorded raw tensors (scikit-learn) — beyond the paper.

Raw tensors are opt-in (``record.raw_layers``) and read with :func:`alignment.recording.open_raw`
(or ``open_run(raw=True)``). The recorder stores, per layer and epoch start, the rule's update,
the BP gradient and the feedback matrix (for BP the weights themselves; for PFA the product B·R,
for KP the learned B; fixed for FA). Each layer's tensors at every ``raw_step`` (of every run,
when runs are combined) are the rows of one PCA, so runs share the same components.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from sklearn.decomposition import PCA

from alignment.recording.schema import RAW_QUANTITIES, RAW_SEPARATOR


def raw_layers(raw: xr.Dataset, quantity: str) -> list[str]:
    """The layers with a raw ``quantity`` variable, in record order."""
    prefix = f"{quantity}{RAW_SEPARATOR}"
    return [str(n)[len(prefix) :] for n in raw.data_vars if str(n).startswith(prefix)]


def trajectory_pca(
    raw: xr.Dataset, *, quantity: str = "feedback", n_components: int = 2
) -> xr.Dataset:
    """Principal components of each layer's trajectory of raw ``quantity`` tensors.

    Returns ``projection`` (layer, …, raw_step, component): each record projected on the
    layer's leading components, and ``explained_variance_ratio`` (layer, component). When no
    such tensors were recorded, an empty Dataset whose attr ``skipped`` says why.
    """
    if quantity not in RAW_QUANTITIES:
        raise ValueError(f"quantity must be one of {', '.join(RAW_QUANTITIES)}, got {quantity!r}")
    layers = raw_layers(raw, quantity)
    if not layers:
        return xr.Dataset(
            attrs={"skipped": f"no raw {quantity!r} tensors recorded (set record.raw_layers)"}
        )
    projections, ratios = [], []
    for layer in layers:
        da = raw[f"{quantity}{RAW_SEPARATOR}{layer}"]
        rows = [
            d
            for d in da.dims
            if d not in (*RAW_QUANTITIES, "sample", "logit")
            and not d.startswith(f"{layer}{RAW_SEPARATOR}")
        ]
        stacked = da.stack(row_=rows, create_index=False).transpose("row_", ...)
        x = np.asarray(stacked.values, dtype=np.float64).reshape(stacked.sizes["row_"], -1)
        keep = np.isfinite(x).all(axis=1)
        k = min(n_components, int(keep.sum()), x.shape[1])
        projection = np.full((x.shape[0], n_components), np.nan)
        ratio = np.full(n_components, np.nan)
        if k >= 1:
            pca = PCA(n_components=k, svd_solver="full").fit(x[keep])
            projection[keep, :k] = pca.transform(x[keep])
            ratio[:k] = pca.explained_variance_ratio_
        shape = [da.sizes[d] for d in rows]
        projections.append(
            xr.DataArray(
                projection.reshape(*shape, n_components),
                dims=(*rows, "component"),
                coords={n: c for n, c in da.coords.items() if set(c.dims) <= set(rows)},
            )
        )
        ratios.append(xr.DataArray(ratio, dims="component"))
    layer_index = xr.DataArray(layers, dims="layer", name="layer")
    out = xr.Dataset(
        {
            "projection": xr.concat(projections, dim=layer_index, join="outer").assign_attrs(
                long_name=f"{RAW_QUANTITIES[quantity].long_name}, principal component",
                units="1",
                description=f"Projection of each recorded {quantity} tensor on the layer's "
                "principal components (PCA over all records of that layer).",
            ),
            "explained_variance_ratio": xr.concat(ratios, dim=layer_index).assign_attrs(
                long_name="explained variance ratio",
                units="1",
                description="Fraction of the trajectory's variance along each component.",
            ),
        },
        coords={"component": np.arange(1, n_components + 1)},
    )
    out.attrs = {"quantity": quantity}
    return out
