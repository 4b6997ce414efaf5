"""Memory accounting: exact optimizer-state bytes, and reports comparing optimizers."""
