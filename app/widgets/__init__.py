"""The main window's widgets, one module per feature: chat, composer, conversations, generation, tower_monitor,
voice, settings, banner."""
