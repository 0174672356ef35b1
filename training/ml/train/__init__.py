"""Fine-tuning: data, the configuration, the input pipeline, the loop, fit, calibration, metrics
and plots. :mod:`.config` imports no torch (the web process validates with it)."""
