"""Datasets embedded in the package: they work offline, nothing is downloaded.

* :func:`xor`: the XOR truth table.
* :func:`apartments`, :func:`advertising`: two small regression tables in the format of the
  lecture slides (apartment features -> price; ad spend per channel -> sales). The values were
  generated once for dlfun from a known linear rule plus noise (documented on each function)
  and are written out below, so fitted weights can be compared with the rule; they are
  teaching tables, not market data.
* :func:`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images, UCI
  optdigits test set), the default image dataset.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Table:
    """A regression table: ``features (N, D)``, ``targets (N,)`` and their names."""

    features: np.ndarray
    targets: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str
    description: str

    def __len__(self) -> int:
        return len(self.targets)


def xor() -> tuple[np.ndarray, np.ndarray]:
    """The XOR truth table: inputs ``(4, 2)`` float32 in {0, 1}, labels ``(4,)`` int32."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    return x, np.array([0, 1, 1, 0], np.int32)


# area m^2, floor, distance to subway km, local income k$/year -> price k$
_APARTMENTS = np.array([
    (91, 14, 2.4, 70, 387), (49, 4, 4.8, 60, 221), (58, 6, 4.5, 59, 247),
    (102, 5, 0.6, 92, 471), (120, 13, 1.4, 38, 407), (43, 13, 1.1, 55, 249),
    (37, 8, 4.5, 66, 216), (46, 5, 2.9, 71, 255), (62, 2, 2.0, 38, 245),
    (45, 5, 4.2, 49, 192), (83, 3, 1.9, 38, 298), (86, 2, 3.5, 35, 282),
    (39, 13, 1.3, 54, 228), (81, 8, 0.3, 59, 352), (30, 16, 3.5, 87, 257),
    (72, 5, 1.8, 36, 289), (118, 7, 1.8, 78, 468), (102, 15, 1.5, 62, 411),
    (84, 10, 1.4, 70, 367), (59, 5, 2.9, 44, 243), (49, 6, 1.8, 83, 279),
    (70, 13, 2.2, 58, 312), (55, 6, 1.2, 60, 277), (109, 8, 2.6, 69, 413),
], np.float32)

# YouTube, TV, newspaper spend k$ -> sales k units
_ADVERTISING = np.array([
    (77.8, 4.5, 65.4, 5.6), (148.3, 4.9, 41.4, 8.3), (42.8, 14.4, 77.9, 6.6),
    (118.1, 19.8, 67.3, 12.5), (235.8, 29.0, 50.5, 18.4), (75.5, 45.5, 71.2, 15.6),
    (254.1, 13.1, 7.9, 16.6), (186.2, 9.2, 18.2, 13.3), (192.0, 8.4, 72.7, 13.9),
    (272.0, 5.5, 15.2, 16.9), (155.4, 9.4, 7.6, 10.7), (45.9, 12.6, 31.8, 9.4),
    (193.9, 47.5, 57.7, 18.8), (192.2, 43.9, 48.0, 19.8), (241.0, 8.8, 43.1, 14.5),
    (42.3, 39.4, 59.7, 13.6), (69.3, 2.3, 66.8, 5.2), (280.1, 33.9, 2.7, 21.0),
    (171.0, 17.0, 71.9, 12.8), (65.2, 19.2, 48.6, 8.2), (130.0, 12.8, 70.3, 10.7),
    (120.5, 29.0, 39.7, 14.1), (43.5, 46.7, 27.3, 12.9), (179.7, 41.8, 11.5, 17.3),
], np.float32)


def apartments() -> Table:
    """24 apartments: area (m^2), floor, distance to subway (km), local income (k$/year) ->
    price (k$).

    Generated from price = 40 + 2.5 area + 1.5 floor - 12 distance + 1.8 income + N(0, 8^2),
    rounded.
    """
    return Table(_APARTMENTS[:, :4].copy(), _APARTMENTS[:, 4].copy(),
                 ("area_m2", "floor", "subway_km", "income_k"), "price_k",
                 apartments.__doc__.split("\n\n")[0])


def advertising() -> Table:
    """24 campaigns: YouTube, TV and newspaper spend (k$) -> sales (k units).

    Generated from sales = 3 + 0.045 youtube + 0.19 tv + 0 newspaper + N(0, 1), rounded: the
    newspaper column carries no signal, which a fitted model should discover.
    """
    return Table(_ADVERTISING[:, :3].copy(), _ADVERTISING[:, 3].copy(),
                 ("youtube_k", "tv_k", "newspaper_k"), "sales_k",
                 advertising.__doc__.split("\n\n")[0])


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (no download).

    Returns:
      images ``(1797, 8, 8, 1)`` float32 in [0, 1] (the original 0..16 grey levels / 16) and
      labels ``(1797,)`` int32 in 0..9.
    """
    table = _digits_table()
    images = (table[:, :64].astype(np.float32) / 16.0).reshape(-1, 8, 8, 1)
    return images, table[:, 64].astype(np.int32)


def _digits_table() -> np.ndarray:
    """The ``(1797, 65)`` rows of scikit-learn's ``digits.csv.gz`` (64 grey levels, then the
    label), read straight from the installed package: importing scikit-learn itself costs
    ~1.5 s at every start. Through ``load_digits`` where the file is not where it used to be."""
    import gzip
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "datasets/data/digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.float64)
            if table.shape == (1797, 65):
                return table
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.concatenate([d.data, d.target[:, None]], axis=1)
