"""The method registry: a method is one module here and one line below."""
from __future__ import annotations

from core.methods.ae_kmeans import AEKMeans
from core.methods.base import Batch, CurvePanel, Method
from core.methods.cdc import CDC
from core.methods.dcss import DCSS
from core.methods.dec import DEC
from core.methods.decs import DECS
from core.methods.dscdan import DSCDAN
from core.methods.idec import IDEC
from core.methods.kmeans import KMeansPixels
from core.methods.secu import SeCu

REGISTRY: dict[str, type[Method]] = {m.name: m for m in (KMeansPixels, AEKMeans, DEC, IDEC, CDC, DECS, SeCu, DCSS,
                                                          DSCDAN)}


def get_method(name: str) -> type[Method]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(REGISTRY)}") from None


__all__ = ["REGISTRY", "Batch", "CurvePanel", "Method", "get_method"]
