"""Lightning glue: the thin LightningModule, the diagnostics callbacks, loggers."""
