"""IDEC (Guo et al., IJCAI 2017): DEC's KL plus the autoencoder's reconstruction, spec ``dec_idec.md``."""
from __future__ import annotations

from dataclasses import dataclass

from core.config import BELOW_ONE, NON_NEGATIVE, knob
from core.losses import reconstruction_loss
from core.methods.dec import DEC, DECConfig
from core.models import adam


@dataclass(frozen=True)
class IDECConfig(DECConfig):
    gamma: float = knob(0.1, symbol="γ", min=0.01, max=1.0, log=True,
                        help="weight of the clustering KL against the reconstruction (IDEC)", limits=NON_NEGATIVE)
    optimizer_name: str = knob("adam", choices=("adam", "sgd"), help="optimizer of the clustering phase")
    lr: float = knob(1e-3, symbol="lr", min=1e-4, max=0.1, log=True, help="learning rate of the clustering phase")
    momentum: float = knob(0.99, min=0.0, max=0.99, step=0.01, help="SGD momentum (optimizer sgd only)", limits=BELOW_ONE)


class IDEC(DEC):
    name = "idec"
    title = "IDEC"
    Config = IDECConfig
    published = {"usps": (0.761, 0.785, "IDEC paper = DSCDAN seed table"),
                 "mnist-test": (0.846, 0.802, "DSCDAN seed table"),
                 "mnist": (0.881, 0.867, "IDEC paper = DSCDAN seed table"),
                 "fashion-mnist": (0.529, 0.557, "DSCDAN seed table")}

    @classmethod
    def dataset_defaults(cls, dataset):
        defaults = super().dataset_defaults(dataset)
        if dataset == "usps":  # the reference code's USPS optimizer
            defaults.update(optimizer_name="sgd", lr=0.1, momentum=0.99)
        return defaults

    def optimizer(self, model, phase):
        if phase == "cluster" and self.config.optimizer_name == "adam":
            return adam(model.parameters(), lr=self.config.lr)
        return super().optimizer(model, phase)

    def training_step(self, model, batch, phase):
        z, kl = self.cluster_terms(model, batch)
        recon = reconstruction_loss(batch.x, model.ae.decode(z))
        return {"loss": recon + self.config.gamma * kl, "recon": recon, "kl": kl}
