"""``iwae_pl.callbacks.<Name>``: the class paths configs use (``trainer.callbacks``); see ``lightning/callbacks``."""
from .lightning.callbacks import *  # noqa: F401,F403
from .lightning.callbacks import __all__  # noqa: F401
