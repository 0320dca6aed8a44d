"""How commands reach nodes: one interface, a local and an SSH implementation, and the fan-out."""
