"""The generic trainer and its configuration."""
from core.train.cache import AutoencoderCache
from core.train.config import RunConfig, TrainerConfig
from core.train.trainer import Trainer

__all__ = ["AutoencoderCache", "RunConfig", "Trainer", "TrainerConfig"]
