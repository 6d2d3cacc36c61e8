"""Built-in plugins, one module per scheme; each exports ``PLUGIN``."""
