"""How work reaches Ray: the d2d CLI, connecting, Ray Jobs, cluster definitions."""
