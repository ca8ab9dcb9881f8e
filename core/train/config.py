"""The trainer's own knobs and the resolved configuration of one run."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.config import NON_NEGATIVE, Config, ConfigError, knob
from core.methods import get_method
from core.train.init_weights import WeightsError, file_sha256


@dataclass(frozen=True)
class TrainerConfig(Config):
    batch_size: int = knob(256, symbol="B", min=32, max=1024, step=32, help="samples per optimisation step")
    pretrain_epochs: int = knob(50, min=0, max=500, step=5, help="epochs of autoencoder pretraining")
    epochs: int = knob(200, min=1, max=2000, step=1, limits=NON_NEGATIVE,  # 0: the ablations' "pretraining only"
                       help="epochs of the clustering phase (a method may stop earlier when it converges)")
    snapshot_size: int = knob(3000, min=200, max=10000, step=100,
                              help="latent codes saved per epoch for Explore (the same random samples every epoch)")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run; written to ``config.json``."""

    method: str
    data: str = "digits"
    seed: int = 0
    device: str = "auto"
    n_clusters: int | None = None  # None: the number of classes, or 10 for unlabelled data
    preset: str | None = None
    sweep: str | None = None  # the id of the sweep this run is a trial of
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    params: Config | None = None
    # A state-dict file that replaces pretraining (core.train.init_weights), and its SHA-256 when configured:
    # the run refuses a file that changed since.
    init_weights: str | None = None
    init_weights_sha256: str | None = None

    def __post_init__(self):
        method_cls = get_method(self.method)
        if self.params is None:
            object.__setattr__(self, "params", method_cls.Config())
        if self.n_clusters is not None and (isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, int)
                                            or self.n_clusters < 2):
            raise ConfigError(f"n_clusters={self.n_clusters!r}: clustering needs K ≥ 2 clusters")
        if self.init_weights is not None and self.init_weights_sha256 is None:
            if "pretrain" not in method_cls.phases:
                raise WeightsError(f"{method_cls.title} pretrains no autoencoder, so it cannot start from imported "
                                   "weights")
            path = Path(self.init_weights).expanduser().resolve()
            if not path.is_file():
                raise WeightsError(f"init weights {self.init_weights}: no such file")
            object.__setattr__(self, "init_weights", str(path))
            object.__setattr__(self, "init_weights_sha256", file_sha256(path))

    def check_samples(self, n_samples: int, n_classes: int | None = None) -> None:
        """Refuse a data set of fewer than 2·K samples (K: ``n_clusters``, else the classes, else 10)."""
        k = self.n_clusters or n_classes or 10
        if n_samples < 2 * k:
            raise ConfigError(f"the data has {n_samples} samples; clustering into K={k} needs at least {2 * k}")

    @classmethod
    def build(cls, method: str, data: str = "digits", seed: int = 0, preset: str | None = None,
              overrides: dict | None = None, **fields) -> "RunConfig":
        """Defaults ← the method's per-data-set defaults ← preset ← overrides.

        Keys of presets and overrides may name trainer or method fields.
        """
        method_cls = get_method(method)
        values = dict(method_cls.dataset_defaults(data))
        if preset:
            presets = method_cls.presets(data)
            if preset not in presets:
                raise ConfigError(f"{method} has no preset {preset!r}; choose from {', '.join(presets)}")
            values.update(presets[preset])
        values.update(overrides or {})
        trainer_names = TrainerConfig().field_names()
        method_names = method_cls.Config().field_names()
        unknown = set(values) - trainer_names - method_names
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)} for {method}; "
                             f"known: {', '.join(sorted(trainer_names | method_names))}")
        trainer = TrainerConfig.from_dict({k: v for k, v in values.items() if k in trainer_names})
        params = method_cls.Config.from_dict({k: v for k, v in values.items() if k in method_names})
        return cls(method=method, data=data, seed=seed, preset=preset, trainer=trainer, params=params, **fields)

    def to_dict(self) -> dict:
        return {"method": self.method, "data": self.data, "seed": self.seed, "device": self.device,
                "n_clusters": self.n_clusters, "preset": self.preset, "sweep": self.sweep,
                "trainer": self.trainer.to_dict(), "params": self.params.to_dict(),
                "init_weights": self.init_weights, "init_weights_sha256": self.init_weights_sha256}

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        return cls(method=values["method"], data=values.get("data", "digits"), seed=int(values.get("seed", 0)),
                   device=values.get("device", "auto"), n_clusters=values.get("n_clusters"),
                   preset=values.get("preset"), sweep=values.get("sweep"),
                   trainer=TrainerConfig.from_dict(values.get("trainer", {})),
                   params=get_method(values["method"]).Config.from_dict(values.get("params", {})),
                   init_weights=values.get("init_weights"), init_weights_sha256=values.get("init_weights_sha256"))
