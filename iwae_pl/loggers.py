"""``iwae_pl.loggers.WandbLogger``: the class path configs use (``trainer.logger``); see ``lightning/loggers``."""
from .lightning.loggers import WandbLogger, wandb_credentials_available  # noqa: F401
